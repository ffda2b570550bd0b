"""Per-object records kept in the report folder, so an interrupted evaluation resumes.

Each finished object is written to ``REPORT_DIR/objects/<folder>.json`` (atomically) together
with the run's key: the settings, the evaluation set and a hash of the checkpoint's weight
and config files. A rerun with the same key reuses those records and evaluates only the rest; any
other key recomputes everything. The contact sheets' generated views are kept beside them
(``REPORT_DIR/sheet_views/``) so a resumed run draws the same sheets.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np

OBJECTS_DIR = "objects"
SHEET_VIEWS_DIR = "sheet_views"


def checkpoint_fingerprint(checkpoint) -> str:
    """SHA-256 over the checkpoint's weight and config files (names and contents): a retrained
    checkpoint in the same folder gets a new key; a copy of the same one (carried to another
    machine, new file times) keeps it."""
    import hashlib

    folder = Path(checkpoint) if checkpoint else None
    if folder is None or not folder.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json")):
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


class ObjectStore:
    def __init__(self, out: Path, key: dict):
        self.folder = Path(out) / OBJECTS_DIR
        self.sheet_folder = Path(out) / SHEET_VIEWS_DIR
        self.key = json.loads(json.dumps(key))  # as it reads back from JSON

    def load(self, name: str) -> dict | None:
        path = self.folder / f"{name}.json"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return stored.get("record") if stored.get("key") == self.key else None

    def save(self, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.folder / f"{record['folder']}.json", json.dumps({"key": self.key, "record": record}))

    def save_sheet_views(self, name: str, count: int, views: dict) -> None:
        from PIL import Image

        folder = self.sheet_folder / f"{name}_{count}in"
        folder.mkdir(parents=True, exist_ok=True)
        for index, image in views.items():
            Image.fromarray(np.asarray(image), "RGBA").save(folder / f"view_{index:02d}.png")

    def load_sheet_views(self, name: str, count: int, indices) -> dict | None:
        from .evalset_reader import read_rgba

        folder = self.sheet_folder / f"{name}_{count}in"
        paths = {i: folder / f"view_{i:02d}.png" for i in indices}
        if not all(p.is_file() for p in paths.values()):
            return None
        return {i: read_rgba(p) for i, p in paths.items()}


#: The settings a baseline depends on: not the checkpoint or how it samples, only the evaluation
#: set, how meshes are made and how they are scored.
BASELINE_SETTINGS = ("mesh_quality", "mesh_overrides", "mesh_presets", "few_views_overrides", "surface_samples",
                     "iou_resolution", "fscore_threshold")


def baseline_key(key: dict) -> dict:
    """The part of an ObjectStore key that the baselines (upper bound, inputs only) depend on."""
    settings = key.get("settings") or {}
    return json.loads(json.dumps({"evalset": key.get("evalset"), "evaluation_version": key.get("evaluation_version"),
                                  **{name: settings.get(name) for name in BASELINE_SETTINGS}}))


class BaselineSource:
    """The baselines of an earlier evaluation's records (``--baselines-from REPORT_DIR``).

    The upper bound and the inputs-only meshes do not depend on the checkpoint, so when an
    earlier run used the same evaluation set and the same mesh and scoring settings, its
    baseline figures are the ones this run would compute; reusing them saves most of an
    evaluation's reconstruction time when several checkpoints are compared."""

    def __init__(self, report_dir, key: dict):
        self.folder = Path(report_dir) / OBJECTS_DIR
        self.key = baseline_key(key)

    def load(self, name: str, input_counts) -> dict | None:
        """{"upper_bound": record, "inputs_only": {str(N): record}} or None when the earlier run
        has no such object, or scored it under other settings or without one of the counts."""
        try:
            stored = json.loads((self.folder / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        record = stored.get("record") or {}
        runs = record.get("runs") or {}
        if baseline_key(stored.get("key") or {}) != self.key or any(str(n) not in runs for n in input_counts):
            return None
        upper = record.get("upper_bound")
        inputs_only = {str(n): runs[str(n)].get("inputs_only") for n in input_counts}
        if not upper or upper.get("mesh") is None or any(not r or r.get("mesh") is None for r in inputs_only.values()):
            return None
        return {"upper_bound": upper, "inputs_only": inputs_only}


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
