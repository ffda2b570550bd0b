"""Compare two `mvdpp eval` reports object by object (is checkpoint B better than A?).

    python tools/compare_evals.py A/report.json B/report.json
    python tools/compare_evals.py docs/evaluations/step-13126.report.json.gz B/report.json

Means move with a few outliers; the count of objects on which B beats A says whether a change
helps most objects. For every input count both reports scored, prints a Markdown table: A's and
B's means and on how many of the shared objects B is better (higher PSNR, SSIM, F-score and
IoU; lower Chamfer). Objects or runs only one report has are left out, and the table says how
many objects were compared. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

#: (name, where in a run's record, True when higher is better)
METRICS = (
    ("PSNR", ("views", "psnr"), True),
    ("SSIM", ("views", "ssim"), True),
    ("Chamfer", ("mesh", "chamfer"), False),
    ("F-score", ("mesh", "fscore"), True),
    ("IoU", ("mesh", "iou"), True),
)


def read_runs(path: Path) -> dict[tuple[int, str], dict]:
    """{(object id, inputs): run record} of one report."""
    try:
        # the reports kept in the repository (docs/evaluations/) are gzipped
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
        report = json.loads(text)
        return {(obj["object_id"], inputs): run for obj in report["objects"] for inputs, run in obj["runs"].items()}
    except FileNotFoundError:
        raise SystemExit(f"error: {path} does not exist; pass the report.json of an `mvdpp eval --out` folder.")
    except (json.JSONDecodeError, gzip.BadGzipFile, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"error: {path} is not an `mvdpp eval` report.json ({exc.__class__.__name__}: {exc}).")


def metric(run: dict, where: tuple[str, str]) -> float | None:
    value = (run.get(where[0]) or {}).get(where[1])
    return None if value is None else float(value)


def compare(a: dict, b: dict) -> list[dict]:
    """One row per input count and metric: means of A and B over the objects both scored, and
    how many of those B is better on."""
    rows = []
    for inputs in sorted({k[1] for k in a} & {k[1] for k in b}, key=int):
        keys = sorted(k for k in a.keys() & b.keys() if k[1] == inputs)
        for name, where, higher_better in METRICS:
            pairs = [(metric(a[k], where), metric(b[k], where)) for k in keys]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            if not pairs:
                continue
            better = sum((y > x) if higher_better else (y < x) for x, y in pairs)
            rows.append({"inputs": inputs, "metric": name, "objects": len(pairs), "better": better,
                         "mean_a": sum(x for x, _ in pairs) / len(pairs), "mean_b": sum(y for _, y in pairs) / len(pairs)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report_a", type=Path, help="the reference (e.g. the shipped checkpoint's report.json)")
    parser.add_argument("report_b", type=Path, help="the candidate's report.json")
    args = parser.parse_args(argv)
    rows = compare(read_runs(args.report_a), read_runs(args.report_b))
    if not rows:
        raise SystemExit("error: the two reports share no object scored with the same number of inputs.")
    print("| inputs | metric | A | B | B better on |")
    print("|---|---|---|---|---|")
    for row in rows:
        digits = 4 if row["metric"] == "Chamfer" else 3
        print(f"| {row['inputs']} | {row['metric']} | {row['mean_a']:.{digits}f} | {row['mean_b']:.{digits}f} "
              f"| {row['better']} of {row['objects']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
