"""Compare a multi-GPU training run with a single-GPU one (issue 10's four checks, as figures).

    python tools/compare_runs.py RUN_MULTI RUN_SINGLE [--skip-windows 2]

Both are `mvdpp train` run folders of the same recipe and global batch, the multi-process one
written with `--log-objects`. Prints a Markdown table for BENCHMARKS.md:

* objects: how many object seeds each process trained on and how many two processes shared
  (should be 0: every process sees different objects);
* loss: the two runs' mean loss over the steps both logged, and the mean absolute difference
  of their per-window losses relative to the single run's (the curves match "within noise"
  when this is about the window-to-window scatter of the single run, printed beside it);
* throughput: median samples/s of each run's log windows (the first `--skip-windows` are
  start-up: cache rendering, compilation) and their ratio.

Reads only log.jsonl (through mvdpp's RunFolder: run with PYTHONPATH=backend/src or the
package installed) and objects-rank*.jsonl; needs numpy, not torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mvdpp.training.run_folder import RunFolder


def read_log(run: Path) -> list[dict]:
    folder = RunFolder(run)
    if not folder.log_path.is_file():
        raise SystemExit(f"error: {folder.log_path} does not exist; pass an `mvdpp train --output` folder.")
    return folder.read_log("train")


def objects_per_rank(run: Path) -> dict[int, set[int]]:
    seen = {}
    for path in sorted(run.glob("objects-rank*.jsonl")):
        rank = int(path.stem.removeprefix("objects-rank"))
        seen[rank] = {int(seed) for line in path.read_text().splitlines() if line.strip()
                      for seed in json.loads(line)["object_seed"]}
    return seen


def shared_objects(seen: dict[int, set[int]]) -> int:
    ranks = sorted(seen)
    return sum(len(seen[a] & seen[b]) for i, a in enumerate(ranks) for b in ranks[i + 1:])


def compare(multi: Path, single: Path, skip_windows: int = 2) -> dict:
    multi_log, single_log = read_log(multi), read_log(single)
    if not multi_log or not single_log:
        raise SystemExit("error: a run has no 'train' lines in its log.jsonl (was --log-every 0?).")
    single_by_step = {r["step"]: r["loss"] for r in single_log}
    common = [(r["loss"], single_by_step[r["step"]]) for r in multi_log if r["step"] in single_by_step]
    if not common:
        raise SystemExit("error: the runs logged no step in common; use the same --log-every and --max-steps.")
    multi_loss, single_loss = np.array(common).T
    single_scatter = np.abs(np.diff([r["loss"] for r in single_log])) if len(single_log) > 1 else np.array([0.0])

    def speed(log):
        rates = [r["samples_per_s"] for r in log[skip_windows:]] or [r["samples_per_s"] for r in log]
        return float(np.median(rates))

    seen = objects_per_rank(multi)
    speed_multi, speed_single = speed(multi_log), speed(single_log)
    return {
        "processes": len(seen),
        "objects_per_process": {rank: len(s) for rank, s in sorted(seen.items())},
        "objects_shared": shared_objects(seen),
        "common_steps": len(common),
        "loss_multi": float(multi_loss.mean()),
        "loss_single": float(single_loss.mean()),
        "loss_difference": float(np.mean(np.abs(multi_loss - single_loss)) / max(float(single_loss.mean()), 1e-12)),
        "single_window_scatter": float(single_scatter.mean() / max(float(single_loss.mean()), 1e-12)),
        "samples_per_s_multi": speed_multi,
        "samples_per_s_single": speed_single,
        "speedup": speed_multi / speed_single if speed_single > 0 else float("nan"),
    }


def markdown(figures: dict, multi: Path, single: Path) -> str:
    per = ", ".join(f"rank {r}: {n}" for r, n in figures["objects_per_process"].items()) or "no objects-rank*.jsonl (run with --log-objects)"
    return "\n".join([
        f"| check | `{multi}` | `{single}` |",
        "|---|---|---|",
        f"| processes | {figures['processes']} | 1 |",
        f"| objects per process; shared between processes | {per}; **{figures['objects_shared']} shared** | - |",
        f"| mean loss over {figures['common_steps']} common log steps | {figures['loss_multi']:.5f} | {figures['loss_single']:.5f} |",
        f"| mean per-window loss difference (relative) | {figures['loss_difference']:.1%} | window-to-window scatter {figures['single_window_scatter']:.1%} |",
        f"| samples/s (median of log windows) | {figures['samples_per_s_multi']:.1f} | {figures['samples_per_s_single']:.1f} |",
        f"| speed-up | **{figures['speedup']:.2f}x** | 1x |",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("multi", type=Path, help="run folder of the multi-process run (with --log-objects)")
    parser.add_argument("single", type=Path, help="run folder of the single-process run, same recipe and global batch")
    parser.add_argument("--skip-windows", type=int, default=2, help="log windows left out of the speed (start-up)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = compare(args.multi, args.single, args.skip_windows)
    print(markdown(figures, args.multi, args.single))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
