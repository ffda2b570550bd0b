"""From a scalar field on the grid to a clean triangle mesh in world coordinates."""

from __future__ import annotations

import numpy as np
import trimesh

from ..errors import INCONSISTENT_VIEWS, MVDPPError
from .grid import Grid

#: Connected pieces with fewer faces than this are debris (of carving), not parts of the object;
#: small real parts (a knob, a stub of wire) have more at any preset's grid.
MIN_COMPONENT_FACES = 40


def extract_mesh(field: np.ndarray, grid: Grid, level: float, smoothing_iterations: int = 8,
                 drop_hollows: bool = False) -> trimesh.Trimesh:
    """Marching cubes of ``field`` (R, R, R, indexed [x, y, z]) at ``level``; inside = above level.
    ``drop_hollows``: also remove the surfaces of hollows sealed inside the solid (drop_floaters)."""
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
    mesh = drop_floaters(mesh, drop_hollows)
    if smoothing_iterations > 0:
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=smoothing_iterations)
    if mesh.volume < 0:  # guard the winding convention whatever the library version does
        mesh.invert()
    return mesh


def drop_floaters(mesh: trimesh.Trimesh, drop_hollows: bool = False) -> trimesh.Trimesh:
    """Remove connected pieces (faces joined by shared edges) with fewer than
    MIN_COMPONENT_FACES faces; keep the largest piece if every piece is that small.

    ``drop_hollows`` also removes closed pieces that face inward: the walls of hollows sealed
    inside the solid. Carving leaves such bubbles where it wrongly empties a pocket deep inside
    an object; no view can see into them, so they are no surface of the object, only faces that
    sit far from it (docs/reconstruction.md). Which way is inward is read from the largest
    piece, which always bounds the solid from outside.

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
    if drop_hollows:
        triangles = mesh.triangles
        # signed volume of each piece: the divergence theorem over its faces
        face_volume = np.einsum("ij,ij->i", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2])) / 6.0
        volume = np.bincount(labels, weights=face_volume, minlength=len(counts))
        outward = np.sign(volume[counts.argmax()]) or 1.0
        big &= volume * outward > 0
    keep = big[labels]
    if keep.all():
        return mesh
    mesh.update_faces(keep)
    mesh.remove_unreferenced_vertices()
    return mesh
