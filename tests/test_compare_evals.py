"""tools/compare_evals.py: two `mvdpp eval` reports compared object by object."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_evals", ROOT / "tools" / "compare_evals.py")
compare_evals = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_evals)


def write_report(path: Path, runs: dict[int, dict[str, tuple[float, float]]]) -> Path:
    """runs: {object id: {inputs: (psnr, chamfer)}}; the other metrics follow PSNR."""
    objects = [{"object_id": oid, "runs": {n: {"views": {"psnr": p, "ssim": p / 100},
                                                  "mesh": {"chamfer": c, "fscore": p / 100, "iou": p / 50}}
                                              for n, (p, c) in per_input.items()}}
               for oid, per_input in runs.items()]
    path.write_text(json.dumps({"objects": objects}))
    return path


def test_counts_the_objects_the_candidate_is_better_on_and_keeps_lower_chamfer_as_better(tmp_path, capsys):
    a = write_report(tmp_path / "a.json", {0: {"1": (14.0, 0.05)}, 1: {"1": (13.0, 0.06)}, 2: {"1": (15.0, 0.04)}})
    b = write_report(tmp_path / "b.json", {0: {"1": (14.5, 0.04)}, 1: {"1": (12.0, 0.05)}, 2: {"1": (15.5, 0.045)},
                                           3: {"1": (99.0, 0.0)}})  # object 3: only in B, left out
    rows = {r["metric"]: r for r in compare_evals.compare(compare_evals.read_runs(a), compare_evals.read_runs(b))}
    assert rows["PSNR"]["objects"] == 3 and rows["PSNR"]["better"] == 2
    assert rows["PSNR"]["mean_a"] == pytest.approx(14.0) and rows["PSNR"]["mean_b"] == pytest.approx(14.0)
    assert rows["Chamfer"]["better"] == 2  # lower is better: objects 0 and 1
    assert compare_evals.main([str(a), str(b)]) == 0
    assert "| 1 | PSNR | 14.000 | 14.000 | 2 of 3 |" in capsys.readouterr().out


def test_input_counts_are_compared_separately(tmp_path):
    a = write_report(tmp_path / "a.json", {0: {"1": (14.0, 0.05), "4": (15.0, 0.04)}})
    b = write_report(tmp_path / "b.json", {0: {"1": (13.0, 0.06), "4": (16.0, 0.03)}})
    rows = compare_evals.compare(compare_evals.read_runs(a), compare_evals.read_runs(b))
    assert {(r["inputs"], r["metric"], r["better"]) for r in rows if r["metric"] == "PSNR"} == {("1", "PSNR", 0), ("4", "PSNR", 1)}


def test_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        compare_evals.read_runs(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text(json.dumps({"steps": []}))
    with pytest.raises(SystemExit, match="is not an `mvdpp eval` report.json"):
        compare_evals.read_runs(tmp_path / "other.json")


def test_reads_gzipped_reports_like_plain_ones(tmp_path):
    import gzip

    a = write_report(tmp_path / "a.json", {0: {"1": (14.0, 0.05)}, 1: {"1": (13.0, 0.06)}})
    packed = tmp_path / "a.report.json.gz"
    packed.write_bytes(gzip.compress(a.read_bytes()))
    assert compare_evals.read_runs(packed) == compare_evals.read_runs(a)
    (tmp_path / "plain.json.gz").write_text("not gzip")
    with pytest.raises(SystemExit, match="is not an `mvdpp eval` report.json"):
        compare_evals.read_runs(tmp_path / "plain.json.gz")
