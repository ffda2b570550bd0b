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


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
