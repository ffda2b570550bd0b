"""The result-folder contract shared by the backend (writer) and the Blender extension (reader).

A result folder holds::

    views/view_00.png ... views/view_31.png   32 RGBA views (alpha = object mask), rig order
    cameras.json                               the cameras of those views (format below)
    mesh.glb                                   the reconstructed, coloured mesh (absent with --no-mesh)
    inputs/input_00.png ...                    the normalised condition images actually used
    meta.json                                  settings, seed, checkpoint, versions, timings per stage

cameras.json::

    {"format": "mvdpp-cameras", "version": 1,
     "convention": "blender-camera",   # c2w looks along local -Z, +Y up; world +Z up (see rig.py)
     "image_size": [W, H],
     "views": [{"index": 0, "azimuth_deg": 0.0, "elevation_deg": -30.0, "distance": 1.5,
                "fov_deg": 60.0, "c2w": [[...4 floats...] x 4], "image": "views/view_00.png"}, ...]}

A folder appears complete or not at all: writers fill a hidden temporary folder beside the
target and rename it into place at the end (``ResultWriter``). Standard library + numpy only:
the Blender extension imports this module.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from .rig import Camera

CAMERAS_FILE = "cameras.json"
META_FILE = "meta.json"
MESH_FILE = "mesh.glb"
VIEWS_DIR = "views"
INPUTS_DIR = "inputs"
CAMERAS_FORMAT = "mvdpp-cameras"
META_FORMAT = "mvdpp-result"
FORMAT_VERSION = 1
PARTIAL_PREFIX = ".partial-"


def view_filename(index: int) -> str:
    return f"{VIEWS_DIR}/view_{index:02d}.png"


def input_filename(index: int) -> str:
    return f"{INPUTS_DIR}/input_{index:02d}.png"


class ResultFormatError(ValueError):
    """A folder is not a valid result folder; the message says what is wrong."""


def cameras_document(cameras: list[Camera], image_size: tuple[int, int]) -> dict:
    views = []
    for camera in cameras:
        entry = camera.to_dict()
        entry["image"] = view_filename(camera.index)
        views.append(entry)
    return {
        "format": CAMERAS_FORMAT,
        "version": FORMAT_VERSION,
        "convention": "blender-camera",
        "image_size": [int(image_size[0]), int(image_size[1])],
        "views": views,
    }


@dataclass
class ResultView:
    camera: Camera
    c2w: list[list[float]]  # as stored in cameras.json (the importer uses this, not a recomputation)
    image_path: Path


@dataclass
class Result:
    folder: Path
    image_size: tuple[int, int]
    views: list[ResultView]
    mesh_path: Path | None
    input_paths: list[Path]
    meta: dict


def read_result(folder: str | os.PathLike) -> Result:
    """Read and validate a result folder; raises ResultFormatError with a readable message."""
    folder = Path(folder)
    cameras_path = folder / CAMERAS_FILE
    if not cameras_path.is_file():
        raise ResultFormatError(f"{folder} is not an MVD++ result folder: {CAMERAS_FILE} is missing")
    try:
        doc = json.loads(cameras_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultFormatError(f"{cameras_path} cannot be read: {exc}") from exc
    if doc.get("format") != CAMERAS_FORMAT or doc.get("version") != FORMAT_VERSION:
        raise ResultFormatError(f"{cameras_path} is not a version-{FORMAT_VERSION} {CAMERAS_FORMAT} file")
    views = []
    for entry in doc.get("views", []):
        image_path = folder / entry["image"]
        if not image_path.is_file():
            raise ResultFormatError(f"{image_path} is listed in {CAMERAS_FILE} but missing")
        c2w = entry["c2w"]
        if len(c2w) != 4 or any(len(row) != 4 for row in c2w):
            raise ResultFormatError(f"view {entry.get('index')} in {cameras_path} has no 4x4 c2w matrix")
        views.append(ResultView(Camera.from_dict(entry), c2w, image_path))
    if not views:
        raise ResultFormatError(f"{cameras_path} lists no views")
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    mesh_path = folder / MESH_FILE
    inputs = sorted((folder / INPUTS_DIR).glob("input_*.png")) if (folder / INPUTS_DIR).is_dir() else []
    return Result(
        folder=folder,
        image_size=tuple(doc["image_size"]),
        views=views,
        mesh_path=mesh_path if mesh_path.is_file() else None,
        input_paths=inputs,
        meta=meta,
    )


class ResultWriter:
    """Builds a result folder in a hidden temporary folder beside ``target``; ``commit`` renames it.

    Use as a context manager: leaving the block with an exception (cancel included) deletes the
    temporary folder, so a reader never sees a half-written result::

        with ResultWriter(out_dir) as writer:
            image.save(writer.path(view_filename(0)))
            ...
            writer.commit()
    """

    def __init__(self, target: str | os.PathLike, overwrite: bool = False):
        self.target = Path(target).absolute()
        self.overwrite = overwrite
        if self.target.exists() and not overwrite:
            raise FileExistsError(f"{self.target} already exists; choose another output folder or allow overwriting")
        self.temp = self.target.parent / f"{PARTIAL_PREFIX}{self.target.name}-{uuid.uuid4().hex[:8]}"
        self.committed = False

    def __enter__(self) -> "ResultWriter":
        self.target.parent.mkdir(parents=True, exist_ok=True)
        (self.temp / VIEWS_DIR).mkdir(parents=True)
        (self.temp / INPUTS_DIR).mkdir()
        return self

    def path(self, relative: str) -> Path:
        return self.temp / relative

    def write_json(self, relative: str, document: dict) -> None:
        self.path(relative).write_text(json.dumps(document, indent=2), encoding="utf-8")

    def commit(self) -> Path:
        if self.target.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.target} appeared while the result was being written")
            old = self.target.parent / f"{PARTIAL_PREFIX}{self.target.name}-old-{uuid.uuid4().hex[:8]}"
            os.replace(self.target, old)
            os.replace(self.temp, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.temp, self.target)
        self.committed = True
        return self.target

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.temp, ignore_errors=True)
