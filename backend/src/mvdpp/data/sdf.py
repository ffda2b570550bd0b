"""Signed distance functions of the procedural primitives and SDF -> mesh by marching cubes.

Used for boolean-difference cuts: trimesh's mesh booleans need an external engine (manifold3d
or Blender) that this environment does not have, so a cut part is built as the zero level set
of ``max(d_part, -d_cutter)`` sampled on a grid and meshed with PyMCubes. Sharp edges come out
slightly bevelled at the grid's resolution, which is fine for training shapes.

All functions take points ``(..., 3)`` in the primitive's local frame (centred, axis along z)
and return distances ``(...)``, negative inside.
"""

from __future__ import annotations

import numpy as np


def box(p: np.ndarray, half_extents) -> np.ndarray:
    q = np.abs(p) - np.asarray(half_extents)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    inside = np.minimum(q.max(axis=-1), 0.0)
    return outside + inside


def ellipsoid(p: np.ndarray, radii) -> np.ndarray:
    """Approximate (bound-correct near the surface) ellipsoid distance."""
    radii = np.asarray(radii)
    k0 = np.linalg.norm(p / radii, axis=-1)
    k1 = np.linalg.norm(p / (radii * radii), axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def cylinder(p: np.ndarray, radius: float, half_height: float) -> np.ndarray:
    d = np.stack([np.linalg.norm(p[..., :2], axis=-1) - radius, np.abs(p[..., 2]) - half_height], axis=-1)
    return np.minimum(d.max(axis=-1), 0.0) + np.linalg.norm(np.maximum(d, 0.0), axis=-1)


def cone(p: np.ndarray, radius: float, half_height: float) -> np.ndarray:
    """Cone with its base (``radius``) at z = -half_height and its apex at z = +half_height."""
    qx = np.linalg.norm(p[..., :2], axis=-1)
    qy = p[..., 2]
    r1, r2, h = radius, 0.0, half_height
    # distance to the caps
    ca_x = qx - np.minimum(qx, np.where(qy < 0.0, r1, r2))
    ca_y = np.abs(qy) - h
    # distance to the slanted side
    k1 = np.array([r2, h])
    k2 = np.array([r2 - r1, 2.0 * h])
    t = np.clip(((k1[0] - qx) * k2[0] + (k1[1] - qy) * k2[1]) / (k2 @ k2), 0.0, 1.0)
    cb_x = qx - k1[0] + k2[0] * t
    cb_y = qy - k1[1] + k2[1] * t
    sign = np.where((cb_x < 0.0) & (ca_y < 0.0), -1.0, 1.0)
    return sign * np.sqrt(np.minimum(ca_x**2 + ca_y**2, cb_x**2 + cb_y**2))


def torus(p: np.ndarray, major_radius: float, minor_radius: float) -> np.ndarray:
    q = np.stack([np.linalg.norm(p[..., :2], axis=-1) - major_radius, p[..., 2]], axis=-1)
    return np.linalg.norm(q, axis=-1) - minor_radius


def mesh_level_set(sdf, lower, upper, voxel: float, max_resolution: int = 96):
    """Mesh the zero level set of ``sdf(points (..., 3)) -> (...)`` inside the box [lower, upper].

    Returns (vertices (V, 3), faces (F, 3)) with outward-facing triangles, or None if empty.
    """
    import mcubes

    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    # pad by two voxels so the surface is closed at the box's faces
    counts = np.clip(np.ceil((upper - lower) / voxel).astype(int) + 5, 8, max_resolution)
    step = (upper - lower) / (counts - 5)
    lower = lower - 2 * step
    axes = [lower[i] + step[i] * np.arange(counts[i]) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    values = sdf(grid)
    if values.min() >= 0.0 or values.max() <= 0.0:
        return None
    vertices, faces = mcubes.marching_cubes(-values, 0.0)  # mcubes treats positive as inside
    if len(faces) == 0:
        return None
    vertices = lower + vertices * step
    faces = faces.astype(np.int64)
    # make triangles face outwards: the signed volume of a closed outward mesh is positive
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    if np.einsum("ij,ij->i", a, np.cross(b, c)).sum() < 0.0:
        faces = faces[:, ::-1].copy()
    return vertices, faces
