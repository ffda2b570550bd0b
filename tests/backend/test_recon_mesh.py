"""mvdpp.recon.mesh: dropping the carving's debris from the extracted mesh."""

from __future__ import annotations

import trimesh

from mvdpp.recon.mesh import MIN_COMPONENT_FACES, drop_floaters


def test_drop_floaters_keeps_big_pieces_and_drops_crumbs():
    big = trimesh.creation.icosphere(subdivisions=3, radius=0.3)  # 1280 faces
    crumbs = [trimesh.creation.icosphere(subdivisions=0, radius=0.01).apply_translation([0.4, 0.1 * i, 0]) for i in range(3)]
    assert all(len(c.faces) < MIN_COMPONENT_FACES for c in crumbs)
    second = trimesh.creation.icosphere(subdivisions=2, radius=0.05).apply_translation([-0.4, 0, 0])  # 320 faces
    mesh = drop_floaters(trimesh.util.concatenate([big, *crumbs, second]))
    assert len(mesh.faces) == len(big.faces) + len(second.faces)
    assert len(mesh.vertices) == len(big.vertices) + len(second.vertices)  # no orphaned vertices
    assert mesh.bounds[1][0] < 0.35  # the crumbs at x = 0.4 are gone
    # only crumbs: the largest one stays, alone
    tiny = trimesh.creation.icosphere(subdivisions=0, radius=0.02)
    tinier = trimesh.creation.box(extents=[0.01] * 3).apply_translation([0.3, 0, 0])
    only = drop_floaters(trimesh.util.concatenate([tiny, tinier]))
    assert len(only.faces) == len(tiny.faces)
