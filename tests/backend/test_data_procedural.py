"""Procedural objects (mvdpp.data.procedural): normalised, coloured, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trimesh")
pytest.importorskip("mcubes")

from mvdpp.data import procedural  # noqa: E402
from mvdpp.data.procedural import Primitive, make_object  # noqa: E402
from mvdpp.errors import MVDPPError  # noqa: E402
from mvdpp.rig import rig_cameras  # noqa: E402


def test_object_is_normalised_and_coloured():
    for seed in (3, 11):
        mesh = make_object(seed)
        lower, upper = mesh.bounds
        assert np.allclose((lower + upper) / 2, 0.0, atol=1e-9)
        assert (upper - lower).max() == pytest.approx(1.0)
        assert mesh.visual.kind == "vertex"
        assert len(np.unique(mesh.visual.vertex_colors[:, :3], axis=0)) > 1


def test_same_seed_same_object_and_images():
    from mvdpp.data.render import Renderer

    a, b, other = make_object(5), make_object(5), make_object(6)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    assert np.array_equal(a.visual.vertex_colors, b.visual.vertex_colors)
    assert a.vertices.shape != other.vertices.shape or not np.allclose(a.vertices, other.vertices)
    renderer = Renderer(48)
    cameras = rig_cameras()[8:12]
    assert np.array_equal(renderer.render(a, cameras), renderer.render(b, cameras))
    assert not np.array_equal(renderer.render(a, cameras), renderer.render(other, cameras))
    renderer.release()


def test_part_counts_and_kinds_vary_across_seeds():
    import trimesh

    # every primitive and wire tube is its own connected piece of the concatenated mesh
    pieces = []
    for seed in range(24):
        mesh = make_object(seed, detail=0.1)
        pieces.append(len(trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(mesh.faces)))))
    assert min(pieces) == 1 and max(pieces) >= 9 and len(set(pieces)) >= 6
    kinds = {Primitive.random(np.random.default_rng(seed)).kind for seed in range(40)}
    assert kinds == set(procedural.PRIMITIVES)


@pytest.mark.parametrize("kind", procedural.PRIMITIVES)
def test_primitive_sdf_agrees_with_its_mesh(kind):
    """The SDF used for cuts describes the same solid as the explicit mesh."""
    primitive = Primitive.random(np.random.default_rng(1), kind=kind)
    mesh = primitive.mesh(0.03)
    distances = primitive.distance(mesh.vertices)
    assert np.abs(distances).max() < 0.01 * primitive.extent + 2e-3


def test_cut_removes_material_and_stays_closed():
    rng = np.random.default_rng(0)
    primitive = Primitive("cube", np.array([0.3, 0.3, 0.3]))
    mesh = procedural._cut_part(primitive, np.array([0.3, 0.0, 0.0]), rng, 0.03)
    assert mesh.is_watertight
    assert mesh.volume > 0.0  # triangles face outwards
    assert mesh.volume < 0.6**3 * 0.99  # a piece is gone
    assert mesh.bounds[1][0] == pytest.approx(0.3, abs=0.02) or mesh.bounds[1][0] < 0.3  # still inside the cube


def test_bad_seed_is_a_clear_error():
    with pytest.raises(MVDPPError):
        make_object(-1)
    with pytest.raises(MVDPPError):
        make_object("7")
