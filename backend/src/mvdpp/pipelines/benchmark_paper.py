"""`mvdpp bench paper`: speed, achieved FLOP rate and memory of the multi-view UNet.

By default the ``paper`` preset (SD-2-sized UNet, 64x64 latents) with random weights on the GPU in
bf16: one denoising step over 1 condition + 32 generation views, with classifier-free guidance as
a batch of two objects, the FLOPs of that step counted by ``torch.utils.flop_counter`` and set
against a large bf16 matmul measured in the same run. ``--train-views N`` also times a training
step (forward + backward) with N kept generation views. On a CPU use a small preset
(``--preset tiny --device cpu``). ``--pipeline`` instead times the whole pipeline, one image to
all 32 views (how the embedded model's CPU time in docs/model.md was measured); with ``--mesh``
it also reconstructs a mesh, from the 32 rendered rig views of a procedural object at the
pipeline's resolution (random weights generate noise, which has no surface to time).

Levers under test: ``--attention-backend`` (one SDPA backend for every layer), ``--compile``
(``torch.compile`` of the UNet) and ``--attention-sweep`` (every attention shape of one step,
timed on each SDPA backend: which backend wins where, and how close attention alone gets to the
matmul rate). ``--profile`` splits one step's time by component.
"""

from __future__ import annotations

import json
import statistics
import time

HELP = "multi-view UNet step time, achieved TFLOP/s vs a matmul, peak memory (default: paper preset on the GPU)"


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="paper", help="model preset (default: paper)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--views", type=int, default=32, help="generation views (default 32)")
    parser.add_argument("--condition-views", type=int, default=1, help="condition views (default 1)")
    parser.add_argument("--no-guidance", action="store_true", help="one pass per step instead of conditional + unconditional")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--train-views", type=int, default=0, help="also time a training step with this many generation views")
    parser.add_argument("--pipeline", action="store_true", help="time the whole pipeline (one image -> --views views) instead")
    parser.add_argument("--sampler", default="dpm++", help="sampler for --pipeline (default dpm++)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="guidance for --pipeline (default 3)")
    parser.add_argument("--mesh", action="store_true", help="with --pipeline: also time the mesh stage (see the module doc)")
    parser.add_argument("--attention-backend", default="auto", help="auto | flash | cudnn | efficient | math (default auto)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (compilation is not timed)")
    parser.add_argument("--channels-last", action="store_true", help="the UNet's weights and inputs in channels_last memory format")
    parser.add_argument("--attention-sweep", action="store_true", help="time each attention shape of a step on every backend")
    parser.add_argument("--profile", action="store_true", help="split one step's time by component (torch.profiler)")
    parser.add_argument("--json", dest="json_path", help="also write the results to this JSON file")


def _resolve(args):
    import torch

    from ..errors import DEVICE, MVDPPError

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MVDPPError(DEVICE, "CUDA was asked for but is not available", "use --device cpu with a small preset (--preset tiny)")
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bf16" if device.startswith("cuda") else "fp32"
    return torch.device(device), {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_tflops(device, dtype) -> float:
    """FLOP rate of a large square matmul, the practical peak to compare the model against."""
    import torch

    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _timed(lambda: a @ b, device, repeats=10, warmup=3)
    return 2 * n**3 / seconds / 1e12


def flop_counter():
    """``FlopCounterMode`` that also counts the CPU's fused attention kernel, which PyTorch's
    formula table leaves out (the CUDA kernels are in it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    cpu_op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return FlopCounterMode(display=False, custom_mapping={cpu_op: cpu_sdpa_flops} if cpu_op is not None else {})


def _peak_memory_gib(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def _random_inputs(unet, batch: int, num_condition: int, num_gen: int, device, dtype):
    """UNet inputs of the right shapes (random latents/tokens; real layout and view ids)."""
    import torch

    from .inputs import ConditionEncoding, build_unet_inputs

    c, s = unet.config.latent_channels, unet.config.sample_size
    condition = ConditionEncoding(
        latents=torch.randn(batch, num_condition, c, s, s, device=device, dtype=dtype),
        tokens=torch.randn(batch, num_condition, unet.config.cross_attention_dim, device=device, dtype=dtype),
        null_latent=torch.randn(c, s, s, device=device, dtype=dtype),
    )
    gen_ids = torch.stack([torch.randperm(32, device=device)[:num_gen] for _ in range(batch)])
    noisy_cond = torch.randn(batch, num_condition, c, s, s, device=device, dtype=dtype)
    noisy_gen = torch.randn(batch, num_gen, c, s, s, device=device, dtype=dtype)
    timesteps = torch.randint(0, 1000, (batch,), device=device)
    return build_unet_inputs(unet.config, noisy_cond, noisy_gen, condition, gen_ids, timesteps)


def bench_unet(args, device, dtype) -> dict:
    import torch
    from ..presets import build_unet

    with torch.device(device):
        unet = build_unet(args.preset).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype=dtype)
    unet.set_attention_backend(args.attention_backend)
    params = sum(p.numel() for p in unet.parameters())
    batch = 1 if args.no_guidance else 2  # guidance = conditional + unconditional as one batch
    inputs = _random_inputs(unet, batch, args.condition_views, args.views, device, dtype)
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)
        inputs.sample = inputs.sample.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.no_grad():
            unet(**inputs.as_kwargs())

    with flop_counter() as counter:
        step()
    flops = counter.get_total_flops()
    shapes = _attention_shapes(step) if args.attention_sweep else None
    compile_s = None
    if args.compile:
        unet.compile()
        start = time.perf_counter()
        step()  # compiles
        _sync(device)
        compile_s = round(time.perf_counter() - start, 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _timed(step, device, args.steps, args.warmup)
    result = {
        "preset": args.preset, "device": str(device), "device_name": _device_name(device), "dtype": str(dtype).removeprefix("torch."),
        "parameters_M": round(params / 1e6, 1), "condition_views": args.condition_views, "generation_views": args.views,
        "guidance_batch": batch, "step_s": _sig(seconds), "step_tflop": _sig(flops / 1e12),
        "achieved_tflops": _sig(flops / seconds / 1e12), "peak_memory_gib": round(_peak_memory_gib(device), 2),
        "attention_backend": args.attention_backend, "compiled": bool(args.compile), "compile_s": compile_s,
        "channels_last": bool(args.channels_last),
    }
    if args.profile:
        from ..training.profiling import component_breakdown

        result["profile_ms"] = {k: round(v, 2) for k, v in component_breakdown(step, device, steps=2).items()}
    del inputs
    if shapes:
        result["attention_sweep"] = sweep_attention(shapes, device, dtype)
    if args.train_views:
        result.update(_bench_train(unet, args, device, dtype))
    result["matmul_tflops"] = _sig(matmul_tflops(device, dtype))
    result["fraction_of_matmul"] = _sig(result["achieved_tflops"] / result["matmul_tflops"])
    return result


def _attention_shapes(fn) -> dict:
    """(batch, heads, query tokens, key tokens, head dim) -> calls, for every attention of ``fn()``."""
    import torch.nn.functional as F

    seen: dict = {}
    original = F.scaled_dot_product_attention

    def recording(query, key, value, *args, **kwargs):
        shape = (*query.shape[:3], key.shape[2], query.shape[3])
        seen[shape] = seen.get(shape, 0) + 1
        return original(query, key, value, *args, **kwargs)

    F.scaled_dot_product_attention = recording
    try:
        fn()
    finally:
        F.scaled_dot_product_attention = original
    return seen


def sweep_attention(shapes: dict, device, dtype, repeats: int = 5) -> list[dict]:
    """Forward time and TFLOP/s of each attention shape on each SDPA backend; a backend that
    cannot run a shape (unsupported, out of memory) is reported as null."""
    import torch
    import torch.nn.functional as F

    from ..models.multiview_attention import ATTENTION_BACKENDS, attention_backend_context

    rows = []
    for (batch, heads, q_len, kv_len, dim), calls in sorted(shapes.items(), key=lambda kv: -kv[0][2]):
        q = torch.randn(batch, heads, q_len, dim, device=device, dtype=dtype)
        k = torch.randn(batch, heads, kv_len, dim, device=device, dtype=dtype)
        v = torch.randn_like(k)
        flops = 4 * batch * heads * q_len * kv_len * dim
        row = {"shape": [batch, heads, q_len, kv_len, dim], "calls_per_step": calls, "tflop": _sig(flops / 1e12)}
        for name in ATTENTION_BACKENDS:
            if name == "math" and q_len * kv_len > 2**28:
                row[name] = None  # the unfused kernel would need its whole score matrix in memory
                continue
            try:
                with attention_backend_context(name):
                    seconds = _timed(lambda: F.scaled_dot_product_attention(q, k, v), device, repeats, 1)
                row[name] = {"ms": _sig(seconds * 1e3), "tflops": _sig(flops / seconds / 1e12)}
            except (RuntimeError, torch.OutOfMemoryError):
                row[name] = None
        rows.append(row)
        del q, k, v
    return rows


def _bench_train(unet, args, device, dtype) -> dict:
    import torch

    unet.train()
    inputs = _random_inputs(unet, 1, args.condition_views, args.train_views, device, dtype)

    def step():
        unet.zero_grad(set_to_none=True)
        unet(**inputs.as_kwargs()).sample.float().square().mean().backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _timed(step, device, max(1, args.steps // 2), 1)
    return {"train_views": args.train_views, "train_step_s": _sig(seconds), "train_peak_memory_gib": round(_peak_memory_gib(device), 2)}


def bench_pipeline(args, device, dtype) -> dict:
    """One image -> ``--views`` rig views, end to end, wall and CPU time."""
    import torch
    from PIL import Image

    from ..presets import build_pipeline

    pipe = build_pipeline(args.preset, seed=0, scheduler=args.sampler, device=device)
    if dtype != torch.float32:
        pipe = pipe.to(dtype=dtype)
    pipe.unet.set_attention_backend(args.attention_backend)
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if args.compile:
        pipe.unet.compile()
    size = pipe.resolution
    image = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    image.paste((200, 60, 40, 255), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    step_times = []
    kwargs = dict(num_inference_steps=args.steps, guidance_scale=args.guidance_scale, view_ids=list(range(args.views)))
    warmup_start = time.perf_counter()
    pipe([image], **{**kwargs, "num_inference_steps": 1})  # warm-up (and compilation)
    _sync(device)
    warmup_s = time.perf_counter() - warmup_start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start, cpu = time.perf_counter(), time.process_time()
    pipe([image], generator=torch.Generator().manual_seed(0),
         callback_on_step_end=lambda p, i, t, kw: step_times.append(time.perf_counter()) or {}, **kwargs)
    _sync(device)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    wall = end - start
    peak = _peak_memory_gib(device)
    step_s = (step_times[-1] - start) / args.steps
    step_flops = _pipeline_step_flops(pipe.unet, args, device, dtype)
    matmul = matmul_tflops(device, dtype)
    mesh = _time_mesh(size, device) if args.mesh else {}
    return {
        "preset": args.preset, "device": str(device), "device_name": _device_name(device), "dtype": str(dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(), "sampler": args.sampler, "steps": args.steps,
        "guidance_scale": args.guidance_scale, "views": args.views, "wall_s": round(wall, 2), "process_cpu_s": round(cpu, 2),
        "sampling_s": round(step_times[-1] - start, 2), "decode_s": round(end - step_times[-1], 2),
        "step_s": _sig(step_s), "step_tflop": _sig(step_flops / 1e12), "achieved_tflops": _sig(step_flops / step_s / 1e12),
        "matmul_tflops": _sig(matmul), "fraction_of_matmul": _sig(step_flops / step_s / 1e12 / matmul),
        "peak_memory_gib": round(peak, 2),
        "attention_backend": args.attention_backend, "compiled": bool(args.compile), "warmup_s": round(warmup_s, 1),
        "channels_last": bool(args.channels_last),
        **mesh, **({"job_s": round(wall + mesh["mesh_s"], 2)} if mesh else {}),
    }


def _pipeline_step_flops(unet, args, device, dtype) -> int:
    """FLOPs of one denoising step as the pipeline runs it: one UNet call over 1 condition +
    ``--views`` views, for two objects when guidance is on (conditional + unconditional)."""
    import torch

    batch = 2 if args.guidance_scale > 1 else 1
    inputs = _random_inputs(unet, batch, 1, args.views, device, dtype)
    with torch.no_grad(), flop_counter() as counter:
        unet(**inputs.as_kwargs())
    return counter.get_total_flops()


def _time_mesh(size: int, device) -> dict:
    """Seconds to reconstruct the mesh of 32 rig views at ``size`` px: a procedural evaluation
    object's rendered views, with the preset the job uses for generated views."""
    from ..data.procedural import make_object
    from ..data.render import Renderer
    from ..recon.pipeline import reconstruct
    from ..rig import rig_cameras

    cameras = rig_cameras()
    views = list(Renderer(size=size).render(make_object(0), cameras))
    timings: dict = {}
    _sync(device)
    start = time.perf_counter()
    mesh = reconstruct(views, cameras, quality="auto", device=device, timings=timings, view_source="generated")
    _sync(device)
    return {"mesh_s": round(time.perf_counter() - start, 2), "mesh_faces": int(len(mesh.faces)),
            "mesh_stages_s": {k: round(v, 2) for k, v in timings.items()}}


def format_sweep(rows: list[dict]) -> str:
    """The attention sweep as a table: ms (TFLOP/s) per backend, per shape."""
    from ..models.multiview_attention import ATTENTION_BACKENDS

    names = list(ATTENTION_BACKENDS)
    lines = ["attention shapes (batch, heads, q, kv, dim) x calls per step: ms (TFLOP/s) per backend",
             "    " + " | ".join(["shape", "calls", "TFLOP"] + names)]
    for row in rows:
        cells = [f"{r['ms']} ({r['tflops']})" if r else "-" for r in (row[n] for n in names)]
        lines.append("    " + " | ".join([str(tuple(row["shape"])), str(row["calls_per_step"]), str(row["tflop"])] + cells))
    return "\n".join(lines)


def _sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits (CPU rates are tiny, GPU times large)."""
    return float(f"{value:.{digits}g}")


def _device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def run(args) -> int:
    from ..errors import BAD_INPUT, MVDPPError
    from ..models.multiview_attention import check_attention_backend

    try:
        check_attention_backend(args.attention_backend)
    except ValueError as exc:
        raise MVDPPError(BAD_INPUT, str(exc)) from exc
    device, dtype = _resolve(args)
    try:
        result = bench_pipeline(args, device, dtype) if args.pipeline else bench_unet(args, device, dtype)
    except RuntimeError as exc:
        if not any(text in str(exc) for text in ("No available kernel", "No viable backend")):
            raise
        # PyTorch's message names no shape; a forced backend lacks a kernel for one of the model's
        # attention shapes (cuDNN, e.g., for cross-attention to a single token).
        raise MVDPPError(BAD_INPUT, f"the {args.attention_backend!r} attention backend has no kernel for some attention layer of "
                         f"the {args.preset!r} model on {device.type}",
                         "--attention-sweep shows which backend runs which shape; --attention-backend auto lets PyTorch choose per layer") from exc
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key == "attention_sweep":
            print(format_sweep(value))
        elif value is not None:
            print(f"{key:<{width}}  {value}")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0
