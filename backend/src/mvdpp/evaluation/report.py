"""Per-object records -> means, the JSON report and a markdown table for BENCHMARKS.md.

Report layout (report.json)::

    {"format": "mvdpp-eval-report", "version": 1, "evalset", "checkpoint", "device", "settings",
     "versions", "seconds", "notes": [...],
     "objects": [{"object_id", "folder", "source",
                  "upper_bound": {"mesh": {chamfer, fscore, iou}, "mesh_error", "mesh_seconds"},
                  "runs": {"1": {"seed", "views": {psnr, ssim, lpips}, "mesh": {...}, "mesh_error",
                                 "inputs_only": {"mesh": {...}, "mesh_error"}, "seconds"}, "4": ...}}],
     "means": {"upper_bound": {...}, "runs": {"1": {"generated": {...}, "inputs_only": {...}}, ...}}}

A mean of a metric is over the objects that have it; Chamfer is undefined for a failed
reconstruction, so every mean block also counts ``objects`` and ``mesh_failures``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

REPORT_FORMAT = "mvdpp-eval-report"
METRICS = ("psnr", "ssim", "lpips", "chamfer", "fscore", "iou")


def mean_block(records: list[dict]) -> dict:
    """records: dicts with optional "views" and "mesh" score dicts and "mesh_error"."""
    block: dict = {"objects": len(records), "mesh_failures": sum(1 for r in records if r.get("mesh_error"))}
    for metric in METRICS:
        values = []
        for record in records:
            for part in ("views", "mesh"):
                value = (record.get(part) or {}).get(metric)
                if value is not None:
                    values.append(value)
        block[metric] = sum(values) / len(values) if values else None
    return block


def compute_means(objects: list[dict], input_counts: list[int]) -> dict:
    means = {"upper_bound": mean_block([o["upper_bound"] for o in objects]), "runs": {}}
    for count in input_counts:
        key = str(count)
        runs = [o["runs"][key] for o in objects]
        means["runs"][key] = {"generated": mean_block(runs), "inputs_only": mean_block([r["inputs_only"] for r in runs])}
    return means


def _cell(value, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(report: dict) -> str:
    """The means as a markdown table, with the run's settings underneath."""
    means, settings = report["means"], report["settings"]
    header = ("| method | inputs | PSNR (dB) | SSIM | LPIPS | Chamfer | F-score@{t} | volume IoU | mesh failures |\n"
              "|---|---|---|---|---|---|---|---|---|").format(t=settings["fscore_threshold"])
    lines = [header]

    def row(name: str, inputs: str, block: dict) -> str:
        return (f"| {name} | {inputs} | {_cell(block['psnr'], 2)} | {_cell(block['ssim'], 3)} | {_cell(block['lpips'], 3)} "
                f"| {_cell(block['chamfer'], 4)} | {_cell(block['fscore'], 3)} | {_cell(block['iou'], 3)} "
                f"| {block['mesh_failures']}/{block['objects']} |")

    for key, run in means["runs"].items():
        lines.append(row("MVD++ (generated views)", key, run["generated"]))
        lines.append(row("inputs only, no diffusion (baseline)", key, run["inputs_only"]))
    lines.append(row("ground-truth 32 views (upper bound)", "32 (truth)", means["upper_bound"]))
    objects = means["upper_bound"]["objects"]
    lines.append("")
    lines.append(f"{objects} objects of `{report['evalset']}`; checkpoint `{report['checkpoint']}`; {settings['steps']} steps, "
                 f"guidance {settings['guidance']} (rescale {settings.get('guidance_rescale', 0.0)}{_interval_note(settings)}), seed {settings['seed']}, "
                 f"sampler {settings['scheduler'] or 'the checkpoint’s'}; "
                 f"views scored at {settings['score_size']} px on white; meshes: reconstruction quality "
                 f"{settings['mesh_quality']}{_generated_note(settings)}, {settings['surface_samples']} surface samples, IoU on a "
                 f"{settings['iou_resolution']}³ grid; device {report['device']}; {report['seconds']:.0f} s.")
    for note in report.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False), encoding="utf-8")
    md_path.write_text(markdown_table(report), encoding="utf-8")
    return json_path, md_path


def _interval_note(settings: dict) -> str:
    """", guided for t/T in [low, high]" when only part of the schedule was guided, else nothing."""
    low, high = settings.get("guidance_interval", (0.0, 1.0))
    return "" if (low, high) == (0.0, 1.0) else f", guided for t/T in [{low}, {high}]"


def _generated_note(settings: dict) -> str:
    """How the generated views' meshes differ from the preset (reports before it was recorded: nothing)."""
    overrides = settings.get("generated_view_overrides") or {}
    if not overrides:
        return ""
    return " (generated views: " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) + ")"
