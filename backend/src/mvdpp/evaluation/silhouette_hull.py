"""The inputs-only baseline for fewer views than the reconstruction accepts (it needs 4).

Without a generative model, one to three views constrain the object only by their silhouettes:
the solid is the intersection of the views' silhouette cones within the object box (a point any
view sees as background is empty; a point outside every image stays, as unknown). That is the
most a reconstruction can know from those views; its mesh is scored like any other.
"""

from __future__ import annotations

import numpy as np

from ..rig import project_points


def silhouette_hull(images, cameras, grid_resolution: int, box_half_size: float = 0.53, smoothing_iterations: int = 8):
    """trimesh.Trimesh of the intersected silhouette cones of RGBA views (alpha = mask)."""
    from ..recon.grid import Grid
    from ..recon.mesh import extract_mesh

    grid = Grid(grid_resolution, box_half_size)
    axis = np.linspace(-box_half_size, box_half_size, grid_resolution)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = np.ones(len(points), dtype=bool)
    for image, camera in zip(images, cameras):
        mask = np.asarray(image)[..., 3] > 127
        size = mask.shape[0]
        pixels, depth = project_points(points, camera, size)
        column, row = np.floor(pixels[:, 0]).astype(np.int64), np.floor(pixels[:, 1]).astype(np.int64)
        seen = (depth > 0) & (column >= 0) & (column < size) & (row >= 0) & (row < size)
        background = np.zeros(len(points), dtype=bool)
        background[seen] = ~mask[row[seen], column[seen]]
        inside &= ~background
    field = inside.reshape((grid_resolution,) * 3).astype(np.float32)
    return extract_mesh(field, grid, 0.5, smoothing_iterations)
