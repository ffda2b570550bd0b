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


def test_drop_hollows_removes_sealed_bubbles_inside_the_solid_only_when_asked():
    outer = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    bubble = trimesh.creation.icosphere(subdivisions=2, radius=0.08)
    bubble.invert()  # the wall of a hollow faces into the hollow
    apart = trimesh.creation.icosphere(subdivisions=2, radius=0.05).apply_translation([0.45, 0, 0])  # a real part
    combined = trimesh.util.concatenate([outer, bubble, apart])
    kept = drop_floaters(combined.copy())
    assert len(kept.faces) == len(combined.faces)  # off by default: the evaluation's cone baseline keeps all
    cleaned = drop_floaters(combined.copy(), drop_hollows=True)
    assert len(cleaned.faces) == len(outer.faces) + len(apart.faces)
    assert cleaned.volume > 0 and abs(cleaned.volume - outer.volume - apart.volume) < 1e-9
    # the orientation is read from the largest piece: a whole mesh wound inward loses its bubble's twin
    flipped = combined.copy()
    flipped.invert()
    assert len(drop_floaters(flipped, drop_hollows=True).faces) == len(outer.faces) + len(apart.faces)


def test_extract_mesh_drops_a_hollow_sealed_inside_the_field_when_asked():
    import numpy as np

    from mvdpp.recon.grid import Grid
    from mvdpp.recon.mesh import extract_mesh

    grid = Grid(33, 0.53)
    axis = np.linspace(-0.53, 0.53, 33)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    radius = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    field = np.minimum(0.4 - radius, radius - 0.15)  # a ball with a sealed hollow ball inside; inside > 0
    kept = extract_mesh(field, grid, 0.0, smoothing_iterations=0)
    cleaned = extract_mesh(field, grid, 0.0, smoothing_iterations=0, drop_hollows=True)
    assert kept.body_count == 2 and cleaned.body_count == 1
    assert np.linalg.norm(cleaned.vertices, axis=1).min() > 0.3  # only the outer wall is left
    assert cleaned.volume > kept.volume  # the hollow's wall no longer subtracts its volume


def test_reconstruct_drops_hollows_for_rendered_views_only(monkeypatch):
    import numpy as np

    from mvdpp import rig
    from mvdpp.recon import pipeline

    seen = []
    real = pipeline.extract_mesh

    def spy(field, grid, level, smoothing_iterations=8, drop_hollows=False):
        seen.append(drop_hollows)
        return real(field, grid, level, smoothing_iterations, drop_hollows)

    monkeypatch.setattr(pipeline, "extract_mesh", spy)
    size = 32
    yy, xx = np.mgrid[:size, :size]
    disc = ((xx - 15.5) ** 2 + (yy - 15.5) ** 2) < 8 ** 2
    view = np.zeros((size, size, 4), np.uint8)
    view[..., :3] = 255
    view[disc] = (200, 80, 40, 255)
    cameras = rig.rig_cameras()
    for source in ("rendered", "generated"):
        pipeline.reconstruct([view] * len(cameras), cameras, quality="draft", device="cpu", grid_resolution=17,
                             stereo=False, view_source=source)
    assert seen == [True, False]
