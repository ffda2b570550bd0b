"""Real assets written by the test (textured OBJ, GLB, PLY) load, normalise and render with their colours."""

from __future__ import annotations

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("moderngl")
from PIL import Image  # noqa: E402

from mvdpp.data.assets import find_assets, load_asset, save_asset  # noqa: E402
from mvdpp.data.render import Lighting, Renderer  # noqa: E402
from mvdpp.errors import MVDPPError  # noqa: E402
from mvdpp.rig import Camera  # noqa: E402

SIZE = 48
RED, GREEN, BLUE, YELLOW = (230, 20, 20), (20, 200, 40), (30, 40, 220), (240, 220, 30)
FRONT = Camera(0.0, 0.0, 1.5)  # on -Y looking at +Y: +X right, +Z up in the image


@pytest.fixture(scope="module")
def renderer():
    r = Renderer(SIZE)
    yield r
    r.release()


def quadrant_texture(path=None) -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right yellow."""
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[:8, :8], image[:8, 8:], image[8:, :8], image[8:, 8:] = RED, GREEN, BLUE, YELLOW
    image = Image.fromarray(image)
    if path is not None:
        image.save(path)
    return image


# A square in the file's Y-up frame facing +Z (its front), UV (0, 0) at the bottom-left corner.
QUAD_VERTICES = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
QUAD_UVS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def assert_quadrants(image: np.ndarray) -> None:
    """The square seen from the front shows the texture upright and unmirrored."""
    q = SIZE // 4
    c = SIZE // 2
    samples = {"top-left": image[c - q, c - q], "top-right": image[c - q, c + q],
               "bottom-left": image[c + q, c - q], "bottom-right": image[c + q, c + q]}
    expected = {"top-left": RED, "top-right": GREEN, "bottom-left": BLUE, "bottom-right": YELLOW}
    for where, pixel in samples.items():
        assert pixel[3] == 255, where
        assert np.abs(pixel[:3].astype(int) - expected[where]).max() <= 12, (where, pixel)


def test_textured_obj_loads_and_renders_with_its_texture(tmp_path, renderer):
    quadrant_texture(tmp_path / "quadrants.png")
    (tmp_path / "quad.mtl").write_text("newmtl painted\nKd 1 1 1\nmap_Kd quadrants.png\n")
    lines = ["mtllib quad.mtl", "usemtl painted"]
    lines += [f"v {x} {y} {z}" for x, y, z in QUAD_VERTICES]
    lines += [f"vt {u} {v}" for u, v in QUAD_UVS]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in QUAD_FACES]
    (tmp_path / "quad.obj").write_text("\n".join(lines) + "\n")

    mesh = load_asset(tmp_path / "quad.obj")
    assert mesh.visual.kind == "texture"
    assert (mesh.bounds[1] - mesh.bounds[0]).max() == pytest.approx(1.0)
    assert np.allclose(mesh.bounds.mean(axis=0), 0.0)
    assert mesh.bounds[1][1] - mesh.bounds[0][1] == pytest.approx(0.0)  # Y-up square now stands facing -Y
    image = renderer.render(mesh, [FRONT], lighting=Lighting.flat())[0]
    assert_quadrants(image)


def test_textured_glb_loads_and_renders_with_its_texture(tmp_path, renderer):
    quad = trimesh.Trimesh(QUAD_VERTICES, QUAD_FACES, process=False)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=quadrant_texture(), baseColorFactor=[255, 255, 255, 255])
    quad.visual = trimesh.visual.TextureVisuals(uv=QUAD_UVS, material=material)
    quad.export(tmp_path / "quad.glb")
    mesh = load_asset(tmp_path / "quad.glb")
    assert mesh.visual.kind == "texture"
    assert_quadrants(renderer.render(mesh, [FRONT], lighting=Lighting.flat())[0])
    # glTF multiplies the texture by baseColorFactor
    material.baseColorFactor = [128, 255, 255, 255]
    quad.export(tmp_path / "dimmed.glb")
    image = renderer.render(load_asset(tmp_path / "dimmed.glb"), [FRONT], lighting=Lighting.flat())[0]
    assert image[SIZE // 4, SIZE // 4, 0] == pytest.approx(RED[0] * 128 / 255, abs=8)


def test_multi_part_glb_with_vertex_colours_and_texture(tmp_path, renderer):
    """Mixed parts: the textured one is baked to vertex colours, both keep their colour."""
    left = trimesh.creation.box((0.8, 0.8, 0.8))
    left.apply_translation((-1.0, 0.0, 0.0))
    left.visual.vertex_colors = np.tile([*GREEN, 255], (len(left.vertices), 1)).astype(np.uint8)
    right = trimesh.creation.box((0.8, 0.8, 0.8))
    right.apply_translation((1.0, 0.0, 0.0))
    right.visual = trimesh.visual.TextureVisuals(
        uv=np.full((len(right.vertices), 2), 0.25), image=Image.new("RGB", (4, 4), BLUE)
    )
    trimesh.Scene([left, right]).export(tmp_path / "pair.glb")
    mesh = load_asset(tmp_path / "pair.glb")
    image = renderer.render(mesh, [FRONT], lighting=Lighting.flat())[0]
    c = SIZE // 2
    # glTF +X stays +X (right in the front view)
    assert np.abs(image[c, SIZE // 4, :3].astype(int) - GREEN).max() <= 12
    assert np.abs(image[c, 3 * SIZE // 4, :3].astype(int) - BLUE).max() <= 12


def test_ply_with_vertex_colours_is_z_up(tmp_path, renderer):
    tall = trimesh.creation.box((0.2, 0.2, 1.0))  # tall along Z: stays upright (PLY is Z-up)
    tall.visual.vertex_colors = np.tile([*RED, 255], (len(tall.vertices), 1)).astype(np.uint8)
    tall.export(tmp_path / "tall.ply")
    mesh = load_asset(tmp_path / "tall.ply")
    assert mesh.bounds[1][2] == pytest.approx(0.5) and mesh.bounds[1][0] == pytest.approx(0.1)
    image = renderer.render(mesh, [FRONT], lighting=Lighting.flat())[0]
    column = image[:, SIZE // 2, 3] > 0
    row = image[SIZE // 2, :, 3] > 0
    assert column.sum() > 3 * row.sum()  # upright in the image
    assert np.abs(image[SIZE // 2, SIZE // 2, :3].astype(int) - RED).max() <= 2


def test_bad_assets_are_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not a mesh")
    with pytest.raises(MVDPPError, match="unsupported"):
        load_asset(tmp_path / "notes.txt")
    with pytest.raises(MVDPPError, match="does not exist"):
        load_asset(tmp_path / "missing.obj")
    (tmp_path / "broken.glb").write_bytes(b"glTF garbage")
    with pytest.raises(MVDPPError):
        load_asset(tmp_path / "broken.glb")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MVDPPError, match="no 3D assets"):
        find_assets(empty)


def test_save_asset_round_trips_in_the_rig_frame(tmp_path):
    """save_asset writes glTF/OBJ +Y up; load_asset(normalise=False) brings it back unchanged."""
    box = trimesh.creation.box((0.2, 0.4, 0.8))
    box.apply_translation((0.1, -0.05, 0.02))
    box.visual.vertex_colors = np.tile([*GREEN, 255], (len(box.vertices), 1)).astype(np.uint8)
    for name in ("box.glb", "box.obj", "box.ply"):
        save_asset(box, tmp_path / name)
        back = load_asset(tmp_path / name, normalise=False)
        assert back.bounds == pytest.approx(box.bounds, abs=1e-6), name
    raw = trimesh.load(tmp_path / "box.glb", force="mesh")
    assert raw.extents == pytest.approx([0.2, 0.8, 0.4])  # in the file, Z-up height is glTF's +Y
