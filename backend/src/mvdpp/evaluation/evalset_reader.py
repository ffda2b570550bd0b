"""Read a fixed evaluation set written by ``mvdpp make-evalset`` (mvdpp.data.evalset)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BAD_INPUT, MVDPPError
from ..result import ResultFormatError, read_result

NOT_AN_EVALSET_HINT = "pass a folder written by `mvdpp make-evalset` (it holds evalset.json and object_* folders)"


@dataclass
class EvalObject:
    """One held-out object: its folder, ground-truth rig views and mesh, and its input views."""

    object_id: int
    folder: Path
    source: str
    view_cameras: list  # 32 mvdpp.rig.Camera, rig order
    view_paths: list[Path]
    input_cameras: list  # mvdpp.rig.Camera of each input; input 0 is at azimuth 0
    input_paths: list[Path]
    mesh_path: Path

    def views(self) -> list[np.ndarray]:
        """The 32 ground-truth views, uint8 RGBA (RGB over white, alpha = mask)."""
        return [read_rgba(p) for p in self.view_paths]

    def inputs(self, count: int) -> list[np.ndarray]:
        return [read_rgba(p) for p in self.input_paths[:count]]

    def mesh(self):
        """The ground-truth mesh in the rig's Z-up frame, as written (no re-normalisation)."""
        from ..data.assets import load_asset

        return load_asset(self.mesh_path, normalise=False)


def read_rgba(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA")).copy()


def read_evalset_parameters(evalset_dir: Path) -> dict:
    evalset_dir = Path(evalset_dir)
    if not evalset_dir.is_dir():
        raise MVDPPError(BAD_INPUT, f"the evaluation set {evalset_dir} does not exist or is not a folder", NOT_AN_EVALSET_HINT)
    from ..data.evalset import EVALSET_FILE, EVALSET_FORMAT

    path = evalset_dir / EVALSET_FILE
    try:
        parameters = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MVDPPError(BAD_INPUT, f"{evalset_dir} is not an evaluation set ({EVALSET_FILE} is missing)", NOT_AN_EVALSET_HINT) from None
    except (OSError, ValueError) as exc:
        raise MVDPPError(BAD_INPUT, f"{path} cannot be read ({exc})", "rewrite the set with `mvdpp make-evalset`") from exc
    if not isinstance(parameters, dict) or parameters.get("format") != EVALSET_FORMAT:
        raise MVDPPError(BAD_INPUT, f"{path} is not an {EVALSET_FORMAT} file", NOT_AN_EVALSET_HINT)
    return parameters


def read_object(folder: Path) -> EvalObject:
    """One object folder -> EvalObject; MVDPPError naming the folder when it is incomplete."""
    from ..data.evalset import read_input_cameras

    def bad(problem: str) -> MVDPPError:
        return MVDPPError(BAD_INPUT, f"evaluation object {folder} {problem}",
                          "delete that folder and rerun `mvdpp make-evalset` with the same settings to rewrite it")

    try:
        result = read_result(folder)
    except (ResultFormatError, OSError, ValueError, KeyError) as exc:
        raise bad(f"is not readable: {exc}") from exc
    if len(result.views) != 32 or sorted(v.camera.index for v in result.views) != list(range(32)):
        raise bad(f"has {len(result.views)} ground-truth views, not the 32 rig views")
    if result.mesh_path is None:
        raise bad("has no ground-truth mesh.glb")
    try:
        input_cameras = read_input_cameras(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise bad(f"has no readable input cameras ({exc})") from exc
    if not input_cameras or len(input_cameras) != len(result.input_paths):
        raise bad(f"has {len(result.input_paths)} input images but {len(input_cameras)} input cameras")
    if abs(input_cameras[0].azimuth_deg) > 1e-6:
        raise bad(f"has its first input at azimuth {input_cameras[0].azimuth_deg}, not 0 (the rig's frame)")
    views = sorted(result.views, key=lambda v: v.camera.index)
    meta = result.meta or {}
    object_id = meta.get("object_seed")
    if object_id is None:
        object_id = int(folder.name.rsplit("_", 1)[-1]) if folder.name.rsplit("_", 1)[-1].isdigit() else 0
    return EvalObject(
        object_id=int(object_id), folder=folder, source=str(meta.get("source", "unknown")),
        view_cameras=[v.camera for v in views], view_paths=[v.image_path for v in views],
        input_cameras=input_cameras, input_paths=list(result.input_paths), mesh_path=result.mesh_path,
    )


def find_objects(evalset_dir, limit: int | None = None, needed_inputs: int = 1) -> tuple[dict, list[EvalObject]]:
    """The set's parameters and its first ``limit`` objects (folder-name order), all checked up front."""
    evalset_dir = Path(evalset_dir)
    parameters = read_evalset_parameters(evalset_dir)
    available = int(parameters.get("num_inputs", 1))
    if needed_inputs > available:
        raise MVDPPError(BAD_INPUT, f"{evalset_dir} has {available} input view(s) per object; {needed_inputs} were asked for",
                         f"rewrite the set with `mvdpp make-evalset --inputs {needed_inputs}` (or more), or lower --inputs")
    folders = sorted(p for p in evalset_dir.iterdir() if p.is_dir() and p.name.startswith("object_"))
    if not folders:
        raise MVDPPError(BAD_INPUT, f"{evalset_dir} holds no object folders", NOT_AN_EVALSET_HINT)
    if limit is not None:
        if limit < 1:
            raise MVDPPError(BAD_INPUT, f"--limit {limit} is not a positive number of objects", "e.g. --limit 10")
        folders = folders[:limit]
    return parameters, [read_object(folder) for folder in folders]
