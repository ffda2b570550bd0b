"""tools/compare_runs.py: issue 10's checks (distinct objects, loss curves, speed-up) as figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "tools" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def write_run(folder: Path, losses: list[float], rate: float, objects: dict[int, list[list[int]]] | None = None) -> Path:
    folder.mkdir(parents=True)
    lines = [{"kind": "train", "step": 10 * (i + 1), "loss": loss, "samples_per_s": rate * (0.1 if i == 0 else 1.0)}
             for i, loss in enumerate(losses)]
    lines.append({"kind": "stop", "step": 10 * len(losses)})
    (folder / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for rank, steps in (objects or {}).items():
        (folder / f"objects-rank{rank}.jsonl").write_text(
            "".join(json.dumps({"step": i, "object_seed": seeds}) + "\n" for i, seeds in enumerate(steps)))
    return folder


def test_a_matching_two_process_run_reports_distinct_objects_and_its_speedup(tmp_path, capsys):
    single = write_run(tmp_path / "single", [1.0, 0.8, 0.7, 0.65], rate=100.0)
    multi = write_run(tmp_path / "multi", [1.01, 0.79, 0.71, 0.64], rate=190.0,
                      objects={0: [[1, 2], [5, 6]], 1: [[3, 4], [7, 8]]})
    figures = compare_runs.compare(multi, single, skip_windows=1)
    assert figures["processes"] == 2 and figures["objects_shared"] == 0
    assert figures["objects_per_process"] == {0: 4, 1: 4}
    assert figures["common_steps"] == 4
    assert figures["loss_difference"] == pytest.approx(0.01 / 0.7875)
    assert figures["speedup"] == pytest.approx(1.9)  # the start-up window (10% speed) is left out
    assert compare_runs.main([str(multi), str(single), "--skip-windows", "1"]) == 0
    assert "**1.90x**" in capsys.readouterr().out


def test_processes_that_share_objects_are_counted(tmp_path):
    single = write_run(tmp_path / "single", [1.0, 0.9], rate=100.0)
    multi = write_run(tmp_path / "multi", [1.0, 0.9], rate=150.0, objects={0: [[1, 2]], 1: [[2, 3]]})
    assert compare_runs.compare(multi, single)["objects_shared"] == 1


def test_runs_with_no_common_step_are_a_clear_error(tmp_path):
    single = write_run(tmp_path / "single", [1.0], rate=100.0)
    other = tmp_path / "other"
    other.mkdir()
    (other / "log.jsonl").write_text(json.dumps({"kind": "train", "step": 7, "loss": 1.0, "samples_per_s": 1.0}) + "\n")
    with pytest.raises(SystemExit, match="no step in common"):
        compare_runs.compare(other, single)
    with pytest.raises(SystemExit, match="does not exist"):
        compare_runs.compare(tmp_path / "missing", single)
