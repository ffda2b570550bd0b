"""Could fp8 attention bring the paper preset's 25 guided steps under 12 s? (issue 9)

The paper preset's step is 86% attention FLOPs, and the fastest bf16 kernel PyTorch offers runs
its largest shape (2 objects x 5 heads x 135,168 tokens x head dim 64) at ~474 TFLOP/s;
BENCHMARKS.md ("Inference at the paper's scale") shows that 12 s needs attention at >= 614.
This probe times a small FlashAttention-style forward kernel written here in Triton (online
softmax over key blocks, one program per block of queries) in three precisions:

* ``bf16``: both matmuls in bf16 (the kernel's own baseline, to compare with PyTorch's SDPA);
* ``fp8-qk``: Q and K scaled per tensor into float8 e4m3, QK^T on the fp8 tensor cores, PV in bf16;
* ``fp8``: both matmuls in fp8 (probabilities and V in e4m3 too),

and measures each one's error on the first 1,024 queries against float32 attention computed
in chunks, next to the error of PyTorch's own bf16 SDPA. Needs a CUDA GPU with fp8 tensor
cores (Hopper) and Triton; not part of the package.

    python3 tools/probe_fp8_attention.py [--shapes 2x5x135168 2x10x33792] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # the probe explains itself instead of failing on import
    triton = None

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
LOG2_E = 1.4426950408889634

if triton is not None:

    def _configs():
        return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
                for m in (128,) for n in (64, 128) for w in (4, 8) for s in (2, 3, 4)]

    @triton.autotune(configs=_configs(), key=["tokens", "HEAD_DIM", "QK_FP8", "PV_FP8"])
    @triton.jit
    def _attention_forward(q_ptr, k_ptr, v_ptr, out_ptr, logit_scale, out_scale, tokens,
                           HEAD_DIM: tl.constexpr, QK_FP8: tl.constexpr, PV_FP8: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        # q, k: (BH, tokens, D) row-major. v: (BH, tokens, D), or (BH, D, tokens) when PV_FP8
        # (fp8 tensor cores want the reduced dimension contiguous in both operands).
        block = tl.program_id(0)
        head = tl.program_id(1).to(tl.int64)
        base = head * tokens * HEAD_DIM
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + base + rows[:, None] * HEAD_DIM + dims[None, :])
        running_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        running_sum = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
        for start in range(0, tokens, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            k = tl.load(k_ptr + base + cols[:, None] * HEAD_DIM + dims[None, :])
            logits = tl.dot(q, tl.trans(k)) * logit_scale  # base-2 logits
            new_max = tl.maximum(running_max, tl.max(logits, 1))
            p = tl.exp2(logits - new_max[:, None])
            correction = tl.exp2(running_max - new_max)
            running_sum = running_sum * correction + tl.sum(p, 1)
            acc = acc * correction[:, None]
            if PV_FP8:
                v_t = tl.load(v_ptr + base + dims[:, None] * tokens + cols[None, :])  # (D, BLOCK_N)
                acc = tl.dot(p.to(v_t.dtype), tl.trans(v_t), acc)
            else:
                v = tl.load(v_ptr + base + cols[:, None] * HEAD_DIM + dims[None, :])
                acc = tl.dot(p.to(v.dtype), v, acc)
            running_max = new_max
        acc = acc / running_sum[:, None] * out_scale
        tl.store(out_ptr + base + rows[:, None] * HEAD_DIM + dims[None, :], acc.to(out_ptr.dtype.element_ty))


def _to_fp8(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-tensor scaled e4m3 copy of ``x`` and the factor that undoes the scaling."""
    amax = float(x.abs().amax().clamp_min(1e-12))
    return (x.float() * (FP8_MAX / amax)).to(FP8), amax / FP8_MAX


def triton_attention(q, k, v, precision: str) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (B, H, N, D) bf16 tensors; N a multiple of 128."""
    batch, heads, tokens, dim = q.shape
    if tokens % 128:
        raise ValueError("the probe's kernel has no masking: the token count must be a multiple of 128")
    q3, k3, v3 = (t.reshape(batch * heads, tokens, dim).contiguous() for t in (q, k, v))
    logit_scale = LOG2_E / math.sqrt(dim)
    out_scale = 1.0
    qk_fp8 = precision in ("fp8-qk", "fp8")
    pv_fp8 = precision == "fp8"
    if qk_fp8:
        q3, q_scale = _to_fp8(q3)
        k3, k_scale = _to_fp8(k3)
        logit_scale *= q_scale * k_scale
    if pv_fp8:
        v3, out_scale = _to_fp8(v3)
        v3 = v3.transpose(1, 2).contiguous()
    out = torch.empty(batch * heads, tokens, dim, device=q.device, dtype=torch.bfloat16)
    grid = lambda meta: (triton.cdiv(tokens, meta["BLOCK_M"]), batch * heads)  # noqa: E731
    _attention_forward[grid](q3, k3, v3, out, logit_scale, out_scale, tokens, HEAD_DIM=dim, QK_FP8=qk_fp8, PV_FP8=pv_fp8)
    return out.view(batch, heads, tokens, dim)


def reference_rows(q, k, v, rows: int) -> torch.Tensor:
    """float32 attention of the first ``rows`` queries, in chunks of keys (exact softmax)."""
    qf = q[:, :, :rows].float()
    logits = torch.cat([qf @ k[:, :, s:s + 16384].float().transpose(-1, -2) for s in range(0, k.shape[2], 16384)], -1)
    return torch.softmax(logits / math.sqrt(q.shape[-1]), -1) @ v.float()


def _time(fn, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def probe(shape: tuple[int, int, int], dim: int = 64, rows: int = 1024) -> list[dict]:
    batch, heads, tokens = shape
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, heads, tokens, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * batch * heads * tokens * tokens * dim
    reference = reference_rows(q, k, v, rows)
    scale = reference.pow(2).mean().sqrt()
    results = []
    candidates = {"sdpa-bf16": lambda: F.scaled_dot_product_attention(q, k, v)}
    candidates.update({f"triton-{p}": (lambda p=p: triton_attention(q, k, v, p)) for p in ("bf16", "fp8-qk", "fp8")})
    for name, fn in candidates.items():
        out = fn()
        error = (out[:, :, :rows].float() - reference)
        seconds = _time(fn)
        results.append({
            "shape": [batch, heads, tokens, tokens, dim], "kernel": name, "ms": round(seconds * 1e3, 2),
            "tflops": round(flops / seconds / 1e12, 1),
            "relative_rms_error": float(error.pow(2).mean().sqrt() / scale), "max_abs_error": float(error.abs().max()),
        })
        print(json.dumps(results[-1]), flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["2x5x135168", "2x10x33792"], help="BATCHxHEADSxTOKENS, head dim 64")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if triton is None or not torch.cuda.is_available():
        print("probe_fp8_attention: needs a CUDA GPU and the triton package", file=sys.stderr)
        return 2
    results = [row for text in args.shapes for row in probe(tuple(int(x) for x in text.split("x")))]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
