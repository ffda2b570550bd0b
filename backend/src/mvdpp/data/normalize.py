"""The project's object normalisation (mvdpp.rig): bounding box centred at the origin, longest
side scaled to 1, so the object spans [-0.5, 0.5] along its longest axis."""

from __future__ import annotations

import numpy as np

from ..errors import BAD_INPUT, MVDPPError


def normalise_mesh(mesh):
    """Centre ``mesh``'s bounding box at the origin and scale its longest side to 1, in place.

    Returns the mesh. Raises MVDPPError for a mesh without extent (empty, a point, ...).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if len(vertices) == 0:
        raise MVDPPError(BAD_INPUT, "the mesh has no vertices", "check that the file contains a surface mesh")
    lower, upper = vertices.min(axis=0), vertices.max(axis=0)
    longest = float((upper - lower).max())
    if not np.isfinite(longest) or longest <= 1e-12:
        raise MVDPPError(BAD_INPUT, "the mesh has no extent (all vertices at one point)", "check the file's geometry")
    transform = np.eye(4)
    transform[:3, :3] *= 1.0 / longest
    transform[:3, 3] = -(lower + upper) / 2.0 / longest
    mesh.apply_transform(transform)
    return mesh
