"""Real 3D assets (OBJ, GLB, GLTF, PLY, plus STL/OFF) as normalised, coloured trimesh meshes.

``load_asset(path)`` reads the file through trimesh with its textures or vertex colours, turns
it into the project's world frame (Z up, see mvdpp.rig) and normalises it like procedural
objects (bounding box centred at the origin, longest side 1).

Up axis: glTF is Y-up by specification and OBJ files are Y-up by the convention Blender's and
most tools' importers assume, so both are rotated +90 degrees about X (Y-up -> Z-up, the model's
front, +Z in glTF, then faces -Y: the rig's azimuth-0 camera). PLY, STL and OFF are taken as
Z-up, as Blender imports them. ``up_axis`` overrides this.

``save_asset(mesh, path)`` is the inverse: it writes a project (Z-up) mesh so that
``load_asset`` and Blender's importers read it back in place; GLB/glTF/OBJ get Y-up coordinates
(trimesh itself writes coordinates unchanged, which would land a Z-up mesh on its back).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BAD_INPUT, MVDPPError
from .normalize import normalise_mesh

ASSET_EXTENSIONS = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")
_Y_UP_EXTENSIONS = (".obj", ".glb", ".gltf")
#: Y-up -> Z-up: (x, y, z) -> (x, -z, y), what Blender's glTF/OBJ importers do.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
Z_UP_TO_Y_UP = Y_UP_TO_Z_UP.T  # a rotation: its inverse is its transpose


def find_assets(folder: str | os.PathLike) -> list[Path]:
    """Asset files under ``folder`` (recursively), sorted so every process sees the same order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MVDPPError(BAD_INPUT, f"asset folder {folder} does not exist", "pass a folder of .obj/.glb/.gltf/.ply files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in ASSET_EXTENSIONS and p.is_file())
    if not files:
        raise MVDPPError(BAD_INPUT, f"no 3D assets found in {folder}", f"the folder needs files ending in {', '.join(ASSET_EXTENSIONS)}")
    return files


def load_asset(path: str | os.PathLike, up_axis: str = "auto", normalise: bool = True):
    """Load a 3D asset as one trimesh.Trimesh (Z-up) with its colours or texture.

    ``normalise=False`` keeps the file's scale and position: use it to read meshes that are
    already in the rig's frame (a reconstruction, an evaluation set's ground truth) without
    hiding their placement.
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ASSET_EXTENSIONS:
        raise MVDPPError(BAD_INPUT, f"{path.name}: unsupported 3D format {suffix or '(none)'}", f"use one of {', '.join(ASSET_EXTENSIONS)}")
    if not path.is_file():
        raise MVDPPError(BAD_INPUT, f"3D asset {path} does not exist", "check the path")
    if up_axis not in ("auto", "y", "z"):
        raise MVDPPError(BAD_INPUT, f"up axis {up_axis!r} is not one of auto, y, z", "pass up_axis='auto', 'y' or 'z'")
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as exc:  # noqa: BLE001 - parsers raise all sorts; the user needs the file name
        raise MVDPPError(BAD_INPUT, f"{path.name} cannot be read as a 3D asset: {exc}", "check that the file is a valid mesh") from exc
    mesh = _single_mesh(loaded, path)
    if up_axis == "y" or (up_axis == "auto" and suffix in _Y_UP_EXTENSIONS):
        mesh.apply_transform(Y_UP_TO_Z_UP)
    return normalise_mesh(mesh) if normalise else mesh


def _single_mesh(loaded, path: Path):
    """One Trimesh from whatever trimesh loaded (textures of several parts go into one atlas)."""
    import trimesh

    if isinstance(loaded, trimesh.Scene):
        parts = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    elif isinstance(loaded, trimesh.Trimesh):
        parts = [loaded] if len(loaded.faces) else []
    else:
        parts = []
    if not parts:
        raise MVDPPError(BAD_INPUT, f"{path.name} contains no triangle mesh", "point clouds and lines cannot be rendered; export a surface mesh")
    if len(parts) == 1:
        return parts[0]
    kinds = {part.visual.kind for part in parts}
    if kinds != {"texture"}:
        # mixed textures and colours cannot share one visual: bake textures into vertex colours
        parts = [_as_vertex_colours(part) for part in parts]
    return trimesh.util.concatenate(parts)


def _as_vertex_colours(mesh):
    import trimesh

    if mesh.visual.kind == "texture":
        mesh.visual = mesh.visual.to_color()
    elif mesh.visual.kind is None:
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.tile([180, 180, 180, 255], (len(mesh.vertices), 1)))
    return mesh


def save_asset(mesh, path: str | os.PathLike) -> Path:
    """Write a Z-up project mesh atomically; GLB/glTF/OBJ as Y-up (see the module doc)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ASSET_EXTENSIONS:
        raise MVDPPError(BAD_INPUT, f"cannot write a mesh as {path.name!r}", f"use one of {', '.join(ASSET_EXTENSIONS)}")
    if suffix in _Y_UP_EXTENSIONS:
        mesh = mesh.copy()
        mesh.apply_transform(Z_UP_TO_Y_UP)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.partial{suffix}")
    try:
        mesh.export(temp, file_type=suffix[1:])
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    return path
