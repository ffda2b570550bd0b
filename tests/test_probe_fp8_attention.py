"""tools/probe_fp8_attention.py: its per-tensor fp8 scaling, and a clear refusal without a GPU.
(The Triton kernel itself needs a Hopper GPU; BENCHMARKS.md has its figures.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("probe_fp8_attention", ROOT / "tools" / "probe_fp8_attention.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_fp8_scaling_uses_the_whole_e4m3_range_and_undoes_itself():
    x = torch.randn(4, 256, 64) * 0.01  # far below e4m3's normal range unscaled
    scaled, undo = probe._to_fp8(x)
    assert scaled.dtype == torch.float8_e4m3fn
    assert float(scaled.float().abs().max()) == probe.FP8_MAX
    restored = scaled.float() * undo
    # e4m3 keeps 3 mantissa bits: every element within 1/16 of its magnitude (plus subnormal steps)
    assert torch.all((restored - x).abs() <= x.abs() / 16 + undo * 2**-9)


def test_without_a_gpu_the_probe_says_what_it_needs(capsys):
    if torch.cuda.is_available() and probe.triton is not None:
        pytest.skip("this machine can run the probe")
    assert probe.main([]) == 2
    assert "needs a CUDA GPU and the triton package" in capsys.readouterr().err
