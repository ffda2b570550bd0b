"""Measuring tools shared by `mvdpp bench train` and `mvdpp bench sample`.

* ``matmul_tflops``: the bf16 (CUDA) / fp32 (CPU) matmul rate of this device, measured now, so
  achieved TFLOP/s are read against what this very machine does rather than a datasheet.
* ``count_flops``: model FLOPs of a callable via ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls, convolutions and attention, the CPU's fused attention kernels included; elementwise
  work is not counted, as is customary).
* ``component_breakdown``: a torch.profiler run whose time is split by component. Regions the
  training code marks with ``torch.profiler.record_function`` ("data", "vae", "optimizer",
  "ema", "image_encoder") win; everything else is classified by the aten operator that launched
  the work (attention, convolution, normalisation, linear, other). Self times are summed (on
  CUDA: the kernel time of each launching CPU op), so the components add up to the profiled
  total without double counting.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

import torch

#: record_function names the training and sampling code use to mark whole components
REGIONS = ("data", "vae", "image_encoder", "optimizer", "ema")

_OP_CLASSES = (
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention", "_attention", "softmax")),
    ("convolution", ("conv", "cudnn_convolution")),
    ("normalisation", ("group_norm", "layer_norm", "batch_norm", "native_norm")),
    ("linear", ("addmm", "aten::mm", "aten::bmm", "aten::linear", "matmul", "baddbmm")),
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(fn: Callable[[], object], device: torch.device, warmup: int, repeat: int) -> list[float]:
    """Seconds per call, each call synchronised (for steps that are long next to a sync)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_tflops(device: torch.device, size: int | None = None, repeat: int = 20) -> tuple[float, str]:
    """Measured dense matmul rate (TFLOP/s) and the dtype it was measured in."""
    if device.type == "cuda":
        dtype, size = torch.bfloat16, size or 8192
    else:
        dtype, size = torch.float32, size or 512
    gen = torch.Generator(device=device).manual_seed(0)
    # Several operand pairs rotated so repeated products do not just measure a warm cache.
    pairs = [(torch.randn(size, size, device=device, dtype=dtype, generator=gen), torch.randn(size, size, device=device, dtype=dtype, generator=gen)) for _ in range(3)]
    out = torch.empty(size, size, device=device, dtype=dtype)

    def run():
        for i in range(repeat):
            a, b = pairs[i % len(pairs)]
            torch.mm(a, b, out=out)

    times = time_callable(run, device, warmup=1, repeat=3)
    seconds = sorted(times)[len(times) // 2] / repeat
    return 2.0 * size**3 / seconds / 1e12, str(dtype).replace("torch.", "")


def _cpu_attention_formulas() -> dict:
    """FLOP formulas for the CPU's fused attention kernels, which PyTorch's table leaves out (the
    CUDA kernels are in it): without them attention would count as zero on the CPU."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    formulas = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            formulas[op] = formula
    return formulas


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    with counter:
        fn()
    return int(counter.get_total_flops())


def _classify(event, region_of: dict[int, str]) -> str:
    region = region_of.get(id(event))
    if region is not None:
        return region
    name = event.name.lower()
    for label, needles in _OP_CLASSES:
        if any(n in name for n in needles):
            return label
    return "other"


def _self_time_us(event, on_device: bool) -> float:
    if on_device:
        for attr in ("self_device_time_total", "self_cuda_time_total"):
            value = getattr(event, attr, None)
            if value is not None:
                return float(value)
        return 0.0
    return float(event.self_cpu_time_total)


def component_breakdown(fn: Callable[[], object], device: torch.device, steps: int = 3) -> dict[str, float]:
    """Milliseconds per call of ``fn`` by component (see the module doc)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    on_device = device.type == "cuda"
    if on_device:
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        synchronize(device)
    events = list(prof.events())
    # Attribute every event below a marked region to that region (walk up the CPU parents).
    region_of: dict[int, str] = {}
    for event in events:
        parent = event
        while parent is not None:
            if parent.name in REGIONS:
                region_of[id(event)] = parent.name
                break
            parent = getattr(parent, "cpu_parent", None)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if on_device and str(getattr(event, "device_type", "")).split(".")[-1] != "CPU":
            # A kernel's time is already in the self device time of the CPU op that launched it.
            continue
        us = _self_time_us(event, on_device)
        if us:
            totals[_classify(event, region_of)] += us
    return {k: v / 1000.0 / steps for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def peak_memory_gib(device: torch.device) -> tuple[float, str]:
    """Peak memory: allocated device memory on CUDA, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "peak CUDA memory allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak process RSS (host)"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def format_breakdown(breakdown: dict[str, float]) -> str:
    total = sum(breakdown.values()) or 1.0
    lines = [f"    {name:<14} {ms:9.2f} ms  {100.0 * ms / total:5.1f}%" for name, ms in breakdown.items()]
    return "\n".join(lines + [f"    {'total':<14} {total:9.2f} ms"])
