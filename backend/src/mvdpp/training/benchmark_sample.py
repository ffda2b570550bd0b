"""`mvdpp bench sample`: throughput of a sampling (denoising) step of the pipeline users run.

One step = the multi-view UNet on the condition views + the generated views, conditional and
unconditional passes batched (classifier-free guidance). Prints the step time, views/s, model
FLOPs per step (FlopCounterMode: the difference between a 2-step and a 1-step call, so the
one-off condition encoding and decoding are excluded), achieved TFLOP/s next to this device's
matmul rate measured in the same run, the whole generation's time, peak memory and a
torch.profiler breakdown by component (the VAE and image encoder are marked as regions).
"""

from __future__ import annotations

from .benchmark_train import add_common_arguments

HELP = "sampling-step throughput: step time, views/s, FLOPs, TFLOP/s vs matmul peak, memory, profile"


def add_arguments(parser) -> None:
    add_common_arguments(parser, default_steps=30)
    parser.add_argument("--checkpoint", help="a pipeline folder (default: random weights of --preset)")
    parser.add_argument("--inputs", type=int, default=1, help="condition views (1-10)")
    parser.add_argument("--views", type=int, default=32, help="generated rig views (default: all 32)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="<= 1 disables guidance (one pass per step)")


def _mark_region(obj, method: str, name: str) -> None:
    """Wrap ``obj.method`` in a profiler region called ``name`` (this benchmark's instance only)."""
    import functools

    import torch

    original = getattr(obj, method)

    @functools.wraps(original)
    def marked(*args, **kwargs):
        with torch.profiler.record_function(name):
            return original(*args, **kwargs)

    setattr(obj, method, marked)


def _condition_images(count: int, size: int, seed: int = 0):
    """Plausible RGBA inputs: a coloured disc on white (timing does not depend on content)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = []
    for _ in range(count):
        inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * rng.uniform(0.25, 0.4)) ** 2
        rgba = np.full((size, size, 4), 255, np.uint8)
        rgba[inside, :3] = rng.integers(0, 255, 3)
        rgba[..., 3] = np.where(inside, 255, 0)
        images.append(Image.fromarray(rgba))
    return images


def run(args) -> int:
    import json
    import time

    import torch

    from ..errors import BAD_INPUT, MVDPPError
    from .profiling import (component_breakdown, count_flops, format_breakdown, matmul_tflops, peak_memory_gib,
                            reset_peak_memory, synchronize)

    preset = "tiny" if args.tiny else args.preset
    steps = min(args.steps, 3) if args.tiny else args.steps
    if steps < 2:
        raise MVDPPError(BAD_INPUT, "--steps must be at least 2 (a step's time is measured between steps).", "Use the default 30.")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise MVDPPError(BAD_INPUT, "--device cuda was asked for but no CUDA GPU is available.", "Use --device auto or cpu.")
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    precision = args.mixed_precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "no"
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    if args.checkpoint:
        from .trainer import load_pipeline

        pipe, _ = load_pipeline(args.checkpoint)
    else:
        from ..presets import build_pipeline

        pipe = build_pipeline(preset, seed=0)
    pipe.to(device=device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if args.compile:
        pipe.unet = torch.compile(pipe.unet, mode=args.compile_mode)
    _mark_region(pipe.vae, "encode", "vae")
    _mark_region(pipe.vae, "decode", "vae")
    _mark_region(pipe.image_encoder, "forward", "image_encoder")
    images = _condition_images(args.inputs, pipe.resolution)
    view_ids = list(range(args.views))
    stamps: list[float] = []

    def stamp(_pipe, _step, _t, kwargs):
        synchronize(device)
        stamps.append(time.perf_counter())
        return kwargs

    def generate(num_steps: int, output_type: str = "np", callback=None):
        generator = torch.Generator(device=device).manual_seed(0)
        return pipe(images, num_inference_steps=num_steps, guidance_scale=args.guidance_scale, generator=generator,
                    view_ids=view_ids, output_type=output_type, callback_on_step_end=callback)

    with torch.inference_mode():
        for _ in range(max(1, args.warmup if not args.tiny else 1)):
            generate(2, "latent")
        synchronize(device)
        reset_peak_memory(device)
        start = time.perf_counter()
        generate(steps, "np", callback=stamp)
        synchronize(device)
        total = time.perf_counter() - start
        gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
        step_seconds = gaps[len(gaps) // 2]
        peak, peak_kind = peak_memory_gib(device)
        if args.compile:  # FlopCounterMode does not see inside compiled graphs
            pipe.unet = pipe.unet._orig_mod
        flops = count_flops(lambda: generate(2, "latent")) - count_flops(lambda: generate(1, "latent"))
        breakdown = {} if args.no_profile else component_breakdown(lambda: generate(3, "np"), device, steps=1)
    peak_rate, peak_dtype = matmul_tflops(device)

    achieved = flops / step_seconds / 1e12
    guided = args.guidance_scale > 1
    figures = {
        "target": "sample", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "preset": preset if not args.checkpoint else args.checkpoint, "resolution": pipe.resolution, "precision": precision,
        "inputs": args.inputs, "views": args.views, "guidance": guided, "steps": steps, "compile": args.compile,
        "seconds_per_step": step_seconds, "views_per_second": args.views / step_seconds, "generation_seconds": total,
        "flops_per_step": flops, "achieved_tflops": achieved, "matmul_tflops": peak_rate, "matmul_dtype": peak_dtype,
        "fraction_of_matmul": achieved / peak_rate, "peak_memory_gib": peak, "peak_memory_kind": peak_kind,
        "breakdown_ms_per_3_step_generation": breakdown,
    }
    print(f"mvdpp bench sample  ({figures['device']}, {figures['preset']}, {pipe.resolution} px, {args.inputs} input(s) -> "
          f"{args.views} views, guidance {'on (batched)' if guided else 'off'}, {precision}{', compiled' if args.compile else ''})")
    print(f"  denoising step        {step_seconds * 1000:.1f} ms  (median of {len(gaps)})")
    print(f"  views/s per step      {args.views / step_seconds:.1f}")
    print(f"  whole generation      {total:.2f} s  ({steps} steps + encoding + decoding {args.views} views)")
    print(f"  model FLOPs / step    {flops / 1e12:.4g} TFLOP")
    print(f"  achieved              {achieved:.4g} TFLOP/s = {100 * achieved / peak_rate:.1f}% of the {peak_dtype} matmul rate "
          f"measured now ({peak_rate:.4g} TFLOP/s)")
    print(f"  {peak_kind + ':':<25} {peak:.2f} GiB")
    if breakdown:
        print("  profile by component (one 3-step generation with decoding):")
        print(format_breakdown(breakdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0
