"""Measure the generate job: seconds per stage, peak GPU memory and how fast cancel takes effect.

    python -m mvdpp.service.benchmark --preset paper --device cuda --steps 20
    python -m mvdpp.service.benchmark --checkpoint DIR --device cuda --low-vram

With ``--preset`` the pipeline has random weights of that size (the views are noise, so the
mesh stage is skipped); with ``--checkpoint`` a trained model is used. Cancel latency is the
time from setting the cancel flag, at a random moment inside the denoising loop, to the job
having stopped and removed its temporary folder. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path


def _input_image(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    array = np.full((512, 512, 3), 255, np.uint8)
    array[150:360, 180:330] = (180, 60, 40)
    path = folder / "input.png"
    Image.fromarray(array).save(path)
    return path


def _load(args):
    import torch

    from .job import apply_low_vram, keep_vae_in_float32, load_pipeline, model_dtype, resolve_device

    if args.checkpoint:
        return load_pipeline(args.checkpoint, args.device, args.low_vram)[0], resolve_device(args.device)
    from ..presets import build_pipeline

    device = resolve_device(args.device)
    pipe = build_pipeline(args.preset, device=device).to(dtype=model_dtype(device))
    keep_vae_in_float32(pipe)
    pipe.set_progress_bar_config(disable=True)
    if args.low_vram and device == "cuda":
        apply_low_vram(pipe, device)
    else:
        pipe.to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    return pipe, device


def measure_cancel(pipe, device, image, folder: Path, low_vram: bool, repeats: int) -> list[float]:
    from ..errors import JobCancelled
    from .job import GenerateSettings, run_generate

    latencies = []
    rng = random.Random(0)
    for attempt in range(repeats):
        cancel = threading.Event()
        steps_seen = threading.Event()
        stopped = {}
        target_step = 2 + attempt

        def progress(stage, step, total):
            if stage == "denoise" and step >= target_step:
                steps_seen.set()

        def work():
            try:
                run_generate(pipe, [image], folder / f"cancel{attempt}", GenerateSettings(steps=1000, mesh=False),
                             device=device, progress=progress, should_cancel=cancel.is_set, low_vram=low_vram)
                stopped["outcome"] = "finished"
            except JobCancelled:
                stopped["outcome"] = "cancelled"
            stopped["at"] = time.perf_counter()

        thread = threading.Thread(target=work)
        thread.start()
        steps_seen.wait()
        time.sleep(rng.uniform(0.0, 0.5))  # land somewhere inside a step
        asked = time.perf_counter()
        cancel.set()
        thread.join()
        assert stopped["outcome"] == "cancelled", stopped
        assert not (folder / f"cancel{attempt}").exists() and not list(folder.glob(".partial-*"))
        latencies.append(round(stopped["at"] - asked, 3))
    return latencies


HELP = "generate job: seconds per stage, peak GPU memory, cancel latency"


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="random-weight pipeline of this preset (tiny, small, embedded, paper)")
    source.add_argument("--checkpoint", help="a trained pipeline folder")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--low-vram", action="store_true")
    parser.add_argument("--cancel-repeats", type=int, default=3)


def run(args) -> int:
    import torch

    from .job import GenerateSettings, run_generate

    started = time.perf_counter()
    pipe, device = _load(args)
    load_s = time.perf_counter() - started
    report = {"preset": args.preset, "checkpoint": args.checkpoint, "device": device, "low_vram": args.low_vram,
              "steps": args.steps, "load_s": round(load_s, 2), "torch": torch.__version__}
    if device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        image = _input_image(folder)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        settings = GenerateSettings(steps=args.steps, seed=0, mesh=bool(args.checkpoint))
        t0 = time.perf_counter()
        result = run_generate(pipe, [image], folder / "result", settings, device=device, low_vram=args.low_vram)
        report["generate_s"] = round(time.perf_counter() - t0, 2)
        report["timings"] = json.loads((result / "meta.json").read_text())["timings"]
        if device == "cuda":
            report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        report["cancel_latency_s"] = measure_cancel(pipe, device, image, folder, args.low_vram, args.cancel_repeats)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
