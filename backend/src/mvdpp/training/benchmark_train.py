"""`mvdpp bench train`: throughput of the real training step (the one `mvdpp train` runs).

Prints samples (objects) per second, model FLOPs per step (FlopCounterMode: forward + backward
matmuls, convolutions, attention), achieved TFLOP/s next to this device's matmul rate measured
in the same run, peak memory, and a torch.profiler breakdown by component. Torch is imported
only inside ``run`` (``mvdpp bench`` builds its parser from this module).
"""

from __future__ import annotations

HELP = "training-step throughput: samples/s, FLOPs, TFLOP/s vs matmul peak, memory, profile"


def add_common_arguments(parser, default_steps: int) -> None:
    parser.add_argument("--preset", default="embedded", help="model preset (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="the tiny preset and few steps: a quick check on the CPU")
    parser.add_argument("--steps", type=int, default=default_steps, help="timed steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--compile-mode", default="default",
                        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiler breakdown")
    parser.add_argument("--json", help="also write the figures to this JSON file")


def add_arguments(parser) -> None:
    from .background_load import KINDS as BACKGROUND_LOADS  # standard library only: the parser stays torch-free

    add_common_arguments(parser, default_steps=20)
    parser.add_argument("--stage", default="unet-eps-single", help="stage whose step is measured (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, help="objects per step (default: the preset's training batch)")
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "procedural", "cache", "cache-latents"],
                        help="synthetic: batches made on the device (the model alone); procedural: the renderer stream; "
                             "cache: objects rendered into device memory first (rendering not timed, printed)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader workers (procedural stream, cache filling)")
    parser.add_argument("--cache-objects", type=int, default=256, help="--data cache: objects rendered (default: %(default)s)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--background-load", default="none", choices=BACKGROUND_LOADS,
                        help="time the steps while this runs beside them: render = a cache prefetch's renderer "
                             "(--background-workers processes), render-apart = the same gathered by another process, "
                             "render-one-context = the workers make meshes and one process renders them, "
                             "cpu = that many spinning processes (default: none)")
    parser.add_argument("--background-workers", type=int, default=15,
                        help="processes of the background load (default: %(default)s, the Continue command's --num-workers)")


def run(args) -> int:
    import json
    import tempfile
    import time

    import torch

    from .background_load import BackgroundLoad
    from .profiling import (component_breakdown, count_flops, format_breakdown, matmul_tflops, peak_memory_gib,
                            reset_peak_memory, synchronize)
    from .stages import TrainSettings
    from .trainer import Trainer

    preset = "tiny" if args.tiny else args.preset
    steps = min(args.steps, 3) if args.tiny else args.steps
    warmup = min(args.warmup, 1) if args.tiny else args.warmup
    with tempfile.TemporaryDirectory() as scratch:
        settings = TrainSettings(stage=args.stage, output=scratch, preset=preset, batch_size=args.batch_size, device=args.device,
                                 mixed_precision=args.mixed_precision, compile=args.compile, compile_mode=args.compile_mode, channels_last=args.channels_last,
                                 gradient_checkpointing=args.gradient_checkpointing, warmup_steps=0, num_workers=args.num_workers,
                                 cache_objects=args.cache_objects, cache_refresh_steps=10**9, cache_prefetch=False,
                                 log_every=0, sample_every=0, checkpoint_every=0)
        trainer = Trainer(settings, data=args.data, quiet=True)
        trainer.setup()
        device = trainer.device
        data = trainer.batches()
        if args.data.startswith("cache"):
            fill_start = time.perf_counter()
            next(data)  # renders the cache
            print(f"  (object cache of {args.cache_objects} objects rendered in {time.perf_counter() - fill_start:.1f} s, not timed)")
        batch_size = settings.global_batch()

        def step():
            with torch.profiler.record_function("data"):
                batch = next(data)
            return trainer.train_step(batch)

        for _ in range(warmup):
            step()
        load = BackgroundLoad(args.background_load, args.background_workers, trainer.resolution).start()
        try:
            load.wait_ready()
            synchronize(device)
            reset_peak_memory(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize(device)
            seconds = (time.perf_counter() - start) / steps
            rendered = load.objects_per_second()
        finally:
            load.stop()
        peak, peak_kind = peak_memory_gib(device)

        # FLOPs of one step, counted on the eager modules (FlopCounterMode does not see inside
        # compiled graphs).
        compiled = trainer.forward_models
        trainer.forward_models = trainer.models
        flops = count_flops(step)
        trainer.forward_models = compiled
        breakdown = {} if args.no_profile else component_breakdown(step, device, steps=max(1, min(3, steps)))
        peak_rate, peak_dtype = matmul_tflops(device)

    achieved = flops / seconds / 1e12
    trained = sum(p.numel() for m in trainer.unwrapped.values() for p in m.parameters())
    figures = {
        "target": "train", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "preset": preset, "stage": args.stage, "batch": batch_size, "resolution": trainer.resolution,
        "precision": trainer.accelerator.mixed_precision, "compile": args.compile and args.compile_mode, "channels_last": args.channels_last,
        "data": args.data, "trained_parameters": trained, "seconds_per_step": seconds,
        "samples_per_second": batch_size / seconds, "flops_per_step": flops, "achieved_tflops": achieved,
        "matmul_tflops": peak_rate, "matmul_dtype": peak_dtype, "fraction_of_matmul": achieved / peak_rate,
        "peak_memory_gib": peak, "peak_memory_kind": peak_kind, "breakdown_ms": breakdown,
        "background_load": args.background_load,
        "background_workers": args.background_workers if args.background_load != "none" else 0,
        "background_objects_per_second": rendered,
    }
    print(f"mvdpp bench train  ({figures['device']}, preset {preset}, stage {args.stage}, {trainer.resolution} px, "
          f"batch {batch_size} objects x (cond + 8 views), precision {figures['precision']}, data {args.data}"
          f"{', compiled' if args.compile else ''}{', channels_last' if args.channels_last else ''})")
    print(f"  trained parameters    {trained / 1e6:.2f} M")
    if args.background_load != "none":
        made = f", {rendered:.3g} objects/s rendered" if rendered is not None else ""
        print(f"  background load       {args.background_load} x {args.background_workers} processes during the timed steps{made}")
    print(f"  step time             {seconds * 1000:.1f} ms   ({steps} steps after {warmup} warm-up)")
    print(f"  samples/s             {batch_size / seconds:.4g}")
    print(f"  model FLOPs / step    {flops / 1e12:.4g} TFLOP (fwd + bwd)")
    print(f"  achieved              {achieved:.4g} TFLOP/s = {100 * achieved / peak_rate:.1f}% of the {peak_dtype} matmul rate "
          f"measured now ({peak_rate:.4g} TFLOP/s)")
    print(f"  {peak_kind + ':':<25} {peak:.2f} GiB")
    if breakdown:
        print("  profile by component (per step):")
        print(format_breakdown(breakdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0
