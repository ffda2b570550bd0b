"""Reading a result folder and writing meshes (GLB, OBJ, PLY) through trimesh."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

from ..errors import BAD_INPUT, MVDPPError
from ..result import ResultFormatError, read_result

MESH_FORMATS = (".glb", ".obj", ".ply")


def load_views(result_folder) -> tuple[list[np.ndarray], list]:
    """(RGBA uint8 images, cameras) of a result folder, in its cameras.json order."""
    from PIL import Image

    try:
        result = read_result(result_folder)
    except ResultFormatError as exc:
        raise MVDPPError(BAD_INPUT, str(exc), "pass a folder written by `mvdpp generate` (views/ and cameras.json)") from exc
    images = []
    for view in result.views:
        try:
            with Image.open(view.image_path) as image:
                images.append(np.asarray(image.convert("RGBA")))
        except OSError as exc:
            raise MVDPPError(BAD_INPUT, f"{view.image_path} cannot be read as an image: {exc}",
                             "regenerate the result folder or replace the broken view") from exc
    return images, [view.camera for view in result.views]


def check_mesh_path(out_path) -> Path:
    out_path = Path(out_path)
    if out_path.suffix.lower() not in MESH_FORMATS:
        raise MVDPPError(BAD_INPUT, f"cannot write a mesh as {out_path.name!r}",
                         f"name the output with one of {', '.join(MESH_FORMATS)}")
    return out_path


def save_mesh(mesh: trimesh.Trimesh, out_path) -> Path:
    """Write ``mesh`` atomically (a reader never sees half a file); the format follows the suffix."""
    out_path = check_mesh_path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = out_path.suffix.lower()
    if suffix in (".glb", ".gltf", ".obj"):
        # glTF is Y-up by specification and OBJ by convention; Blender's importers turn them back
        # into its Z-up, so the mesh lands in the rig's frame (the same rule as data.assets.save_asset)
        from ..data.assets import Z_UP_TO_Y_UP

        mesh = mesh.copy()
        mesh.apply_transform(Z_UP_TO_Y_UP)
    temp = out_path.with_name(f".{out_path.stem}.partial{suffix}")
    try:
        if suffix == ".obj":
            # OBJ has no standard vertex-colour field; trimesh writes the common "v x y z r g b" extension.
            data = trimesh.exchange.obj.export_obj(mesh, include_color=True, include_texture=False)
            temp.write_text(data, encoding="utf-8")
        else:
            mesh.export(temp, file_type=suffix[1:])
        os.replace(temp, out_path)
    finally:
        if temp.exists():
            temp.unlink()
    return out_path


def reconstruct_folder(result_folder, out_path, quality="auto", device="auto", progress=None, should_cancel=None,
                       view_source="generated", **overrides) -> trimesh.Trimesh:
    """A result folder holds the model's views: view_source "generated" unless told otherwise."""
    from .pipeline import reconstruct

    out_path = check_mesh_path(out_path)
    images, cameras = load_views(result_folder)
    mesh = reconstruct(images, cameras, quality=quality, device=device, progress=progress,
                       should_cancel=should_cancel, view_source=view_source, **overrides)
    save_mesh(mesh, out_path)
    return mesh
