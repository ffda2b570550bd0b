"""tools/probe_condition.py on a tiny random pipeline: the guided columns are the sampler's
extrapolation, so guidance 1 is exactly the conditional prediction and 0 the unconditional one."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("probe_condition", ROOT / "tools" / "probe_condition.py")
probe_condition = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe_condition)


def test_guided_errors_reduce_to_the_conditional_and_unconditional_ones(tmp_path, capsys):
    from mvdpp.presets import build_pipeline

    build_pipeline("tiny", seed=0).save_pretrained(tmp_path / "tiny")
    probe_condition.probe(str(tmp_path / "tiny"), objects=1, device="cpu", guidance=(1.0, 0.0, 6.0))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("t=")]
    assert len(lines) == len(probe_condition.TIMESTEPS)
    for line in lines:
        figures = {name: float(value) for name, value in re.findall(r"(true condition|none|guided \S+) ([0-9.]+)", line)}
        assert figures["guided 1"] == pytest.approx(figures["true condition"], rel=1e-4)
        assert figures["guided 0"] == pytest.approx(figures["none"], rel=1e-4)
        assert figures["guided 6"] != pytest.approx(figures["true condition"], rel=1e-3)
