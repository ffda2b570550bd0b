"""A synthetic MVD++ result folder written the way the backend writes one (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mvdpp import result as result_format
from mvdpp.rig import rig_cameras


def view_image(index: int, size: int) -> np.ndarray:
    """RGBA uint8: a disc (the 'object') with a fine checkerboard over white; alpha = disc.

    The 4-pixel checker makes a one-pixel misalignment between a plane and its camera obvious
    in a render comparison; the per-view tint makes a swapped view obvious.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    c = size / 2.0
    mask = (x - c) ** 2 + (y - c) ** 2 <= (0.38 * size) ** 2
    checker = ((x // 4 + y // 4) % 2).astype(np.float64)
    tint = np.array([(37 * index) % 256, (91 * index + 80) % 256, (53 * index + 160) % 256], dtype=np.float64)
    rgb = 0.55 * tint + 0.45 * 255.0 * checker[..., None]
    rgb = np.where(mask[..., None], rgb, 255.0)  # composited over white, as the backend does
    alpha = np.where(mask, 255, 0)
    return np.dstack([rgb, alpha]).round().clip(0, 255).astype(np.uint8)


def write_mesh(path: Path) -> None:
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.35)
    colours = np.c_[(mesh.vertices + 0.5) * 255.0, np.full(len(mesh.vertices), 255.0)].clip(0, 255).astype(np.uint8)
    mesh.visual.vertex_colors = colours
    # glTF is +Y up: store the rig's Z-up coordinates as glTF expects them
    mesh.apply_transform(np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64))
    mesh.export(path)


def write_result(folder: Path, size: int = 64, mesh: bool = True, seed: int = 7) -> Path:
    folder = Path(folder)
    with result_format.ResultWriter(folder) as writer:
        for camera in rig_cameras():
            Image.fromarray(view_image(camera.index, size), "RGBA").save(writer.path(result_format.view_filename(camera.index)))
        writer.write_json(result_format.CAMERAS_FILE, result_format.cameras_document(rig_cameras(), (size, size)))
        Image.fromarray(view_image(99, size), "RGBA").save(writer.path(result_format.input_filename(0)))
        if mesh:
            write_mesh(writer.path(result_format.MESH_FILE))
        writer.write_json(
            result_format.META_FILE,
            {"format": result_format.META_FORMAT, "version": 1, "seed": seed,
             "settings": {"steps": 12, "guidance": 3.0, "scheduler": "dpm++"},
             "inputs": [{"source": "/somewhere/reference.png", "file": "inputs/input_00.png", "mask": "alpha"}]},
        )
        writer.commit()
    return folder


if __name__ == "__main__":
    import sys

    print(write_result(Path(sys.argv[1])))
