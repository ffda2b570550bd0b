"""From a scalar field on the grid to a clean triangle mesh in world coordinates."""

from __future__ import annotations

import numpy as np
import trimesh

from ..errors import INCONSISTENT_VIEWS, MVDPPError
from .grid import Grid

#: Connected pieces with fewer faces than this are debris (of carving), not parts of the object;
#: small real parts (a knob, a stub of wire) have more at any preset's grid.
MIN_COMPONENT_FACES = 40


def extract_mesh(field: np.ndarray, grid: Grid, level: float, smoothing_iterations: int = 8) -> trimesh.Trimesh:
    """Marching cubes of ``field`` (R, R, R, indexed [x, y, z]) at ``level``; inside = above level."""
    import mcubes

    field = np.asarray(field, dtype=np.float64)
    # Pad with "outside" so surfaces touching the box are closed (watertight meshes).
    outside = min(float(field.min()), level) - 1.0
    padded = np.pad(field, 1, mode="constant", constant_values=outside)
    vertices, faces = mcubes.marching_cubes(padded, level)
    if len(faces) == 0:
        raise MVDPPError(INCONSISTENT_VIEWS, "The reconstruction found no solid surface in the views.",
                         "Check that the views' alpha channels mark the object (alpha = mask) and that the views agree "
                         "with each other; a weak checkpoint's views may not.")
    vertices = grid.to_world(vertices - 1.0)
    # PyMCubes' winding makes outward normals for an inside-is-above-level field.
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    mesh = drop_floaters(mesh)
    if smoothing_iterations > 0:
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=smoothing_iterations)
    if mesh.volume < 0:  # guard the winding convention whatever the library version does
        mesh.invert()
    return mesh


def drop_floaters(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Remove connected pieces (faces joined by shared edges) with fewer than
    MIN_COMPONENT_FACES faces; keep the largest piece if every piece is that small.

    Works on face labels: splitting into one Trimesh per piece cost seconds on the porous
    meshes of generated views (thousands of pieces)."""
    from trimesh.graph import connected_component_labels

    labels = connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    counts = np.bincount(labels)
    if len(counts) <= 1:
        return mesh
    big = counts >= MIN_COMPONENT_FACES
    if not big.any():
        big = np.arange(len(counts)) == counts.argmax()  # one piece only, as before
    keep = big[labels]
    if keep.all():
        return mesh
    mesh.update_faces(keep)
    mesh.remove_unreferenced_vertices()
    return mesh
