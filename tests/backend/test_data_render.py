"""The OpenGL renderer (mvdpp.data.render) against the camera rig's geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("moderngl")

from mvdpp.data.render import Lighting, Renderer  # noqa: E402
from mvdpp.errors import MVDPPError  # noqa: E402
from mvdpp.rig import Camera, project_points, rig_cameras  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def renderer():
    r = Renderer(SIZE)
    yield r
    r.release()


def coloured(mesh, rgba):
    mesh.visual.vertex_colors = np.tile(np.asarray(rgba, dtype=np.uint8), (len(mesh.vertices), 1))
    return mesh


def test_sphere_is_centred_and_alpha_matches_its_projected_disc(renderer):
    radius = 0.3
    sphere = coloured(trimesh.creation.icosphere(subdivisions=4, radius=radius), (200, 40, 40, 255))
    cameras = [Camera(0.0, 0.0, 1.5), Camera(135.0, 30.0, 1.5), Camera(270.0, -20.0, 2.1)]
    images = renderer.render(sphere, cameras, lighting=Lighting.flat())
    assert images.shape == (3, SIZE, SIZE, 4) and images.dtype == np.uint8
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres
    for camera, image in zip(cameras, images):
        alpha = image[..., 3] / 255.0
        centre_px, _ = project_points(np.zeros((1, 3)), camera, SIZE)
        assert centre_px[0] == pytest.approx([SIZE / 2, SIZE / 2])
        cx, cy = (alpha * xs).sum() / alpha.sum(), (alpha * ys).sum() / alpha.sum()
        assert (cx, cy) == pytest.approx((SIZE / 2, SIZE / 2), abs=0.15)
        # silhouette of a sphere seen from distance d: a disc of radius f * tan(asin(r / d))
        disc_radius = camera.focal_px(SIZE) * math.tan(math.asin(radius / camera.distance))
        assert alpha.sum() == pytest.approx(math.pi * disc_radius**2, rel=0.03)
        inside = (xs - SIZE / 2) ** 2 + (ys - SIZE / 2) ** 2 < (disc_radius - 1.0) ** 2
        outside = (xs - SIZE / 2) ** 2 + (ys - SIZE / 2) ** 2 > (disc_radius + 1.0) ** 2
        assert (image[inside, 3] == 255).all() and (image[outside, 3] == 0).all()
        assert (image[outside, :3] == 255).all()  # background is white
        # flat lighting shows the surface colour itself
        assert np.abs(image[inside, :3].astype(int) - [200, 40, 40]).max() <= 1


def test_near_cube_hides_far_cube(renderer):
    near = coloured(trimesh.creation.box((0.3, 0.3, 0.3)), (255, 0, 0, 255))
    near.apply_translation((0.0, -0.25, 0.0))  # towards the azimuth-0 camera (on -Y)
    far = coloured(trimesh.creation.box((0.2, 0.2, 0.2)), (0, 0, 255, 255))
    far.apply_translation((0.0, 0.3, 0.0))
    front, back = Camera(0.0, 0.0, 1.5), Camera(180.0, 0.0, 1.5)
    for scene in (trimesh.util.concatenate([far, near]), trimesh.util.concatenate([near, far])):
        images = renderer.render(scene, [front, back], lighting=Lighting.flat())
        red = (images[..., 0] > 200) & (images[..., 2] < 50) & (images[..., 3] == 255)
        blue = (images[..., 2] > 200) & (images[..., 0] < 50) & (images[..., 3] == 255)
        centre = SIZE // 2
        assert red[0, centre, centre] and not blue[0].any()  # the far cube is fully hidden
        assert blue[1, centre, centre]  # seen from behind, the blue cube is in front


def test_depth_output_matches_camera_distance(renderer):
    box = trimesh.creation.box((0.4, 0.4, 0.4))
    camera = Camera(0.0, 0.0, 1.5)
    depth, normal = renderer.render_geometry(box, [camera])
    centre = SIZE // 2
    assert depth[0, centre, centre] == pytest.approx(1.5 - 0.2, abs=1e-3)
    assert normal[0, centre, centre] == pytest.approx([0.0, -1.0, 0.0], abs=1e-3)  # the face looking at the camera
    assert depth[0, 0, 0] == 0.0


def test_views_in_one_batch_match_single_renders(renderer):
    """Tiles of one big framebuffer must not bleed into each other."""
    mesh = coloured(trimesh.creation.box((0.9, 0.9, 0.9)), (30, 160, 90, 255))  # fills most of each view
    cameras = rig_cameras()[:11]
    batch = renderer.render(mesh, cameras)
    for i in (0, 4, 10):
        single = renderer.render(mesh, [cameras[i]])[0]
        assert np.abs(batch[i].astype(int) - single.astype(int)).max() <= 1


def test_renderer_rejects_bad_input(renderer):
    with pytest.raises(MVDPPError):
        renderer.render(trimesh.Trimesh(), [Camera(0.0, 0.0, 1.5)])
    with pytest.raises(MVDPPError):
        renderer.render(trimesh.creation.box(), [])
    with pytest.raises(MVDPPError):
        Renderer(size=3)


def _render_in_child(queue) -> None:
    try:
        Renderer(16).render(trimesh.creation.box(), [Camera(0.0, 0.0, 1.5)])
        queue.put("rendered")
    except MVDPPError as exc:
        queue.put(f"error: {exc.message}")


def test_forked_child_of_a_gl_process_gets_a_clear_error_not_a_hang(renderer):
    import multiprocessing

    renderer.render(trimesh.creation.box(), [Camera(0.0, 0.0, 1.5)])  # this process has a context
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_render_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    message = queue.get(timeout=5)
    assert message.startswith("error:") and "forked" in message


def _render_then_queue_views(queue) -> None:
    import atexit

    before = atexit._ncallbacks()
    images = Renderer(128).render(trimesh.creation.box(), rig_cameras())  # 32 views, 2 MB
    queue.put((before, atexit._ncallbacks(), images))  # still in the feeder thread at exit


def test_a_render_worker_ends_without_gl_teardown_and_delivers_what_it_queued():
    # A spawned render worker registers the quiet exit (no C++ teardown of the GL libraries,
    # which aborted stopped workers); the exit must still flush what it put on a queue.
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_render_then_queue_views, args=(queue,))
    child.start()
    before, after, images = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert after == before + 1
    assert images.shape == (32, 128, 128, 4) and images[..., 3].any()


def test_more_views_than_one_pass_holds():
    small = Renderer(16)
    mesh = coloured(trimesh.creation.icosphere(subdivisions=2, radius=0.4), (90, 90, 200, 255))
    cameras = rig_cameras() * 3  # 96 views: more than MAX_VIEWS_PER_PASS
    images = small.render(mesh, cameras)
    small.release()
    assert images.shape == (96, 16, 16, 4)
    images = images.astype(int)  # tiles at other framebuffer positions may round 1 level apart
    assert np.abs(images[:32] - images[32:64]).max() <= 1 and np.abs(images[:32] - images[64:]).max() <= 1


def test_lighting_is_fixed_in_the_world_so_views_agree(renderer):
    """A flat face looks the same from every camera that sees it (no headlight shading)."""
    box = coloured(trimesh.creation.box((0.6, 0.6, 0.6)), (200, 200, 200, 255))
    cameras = [Camera(0.0, 0.0, 1.5), Camera(40.0, 0.0, 1.5), Camera(-35.0, 20.0, 1.8)]
    lighting = Lighting.random(np.random.default_rng(3))
    images = renderer.render(box, cameras, lighting=lighting)
    depth, normal = renderer.render_geometry(box, cameras)
    front = [image[np.all(np.abs(n - [0.0, -1.0, 0.0]) < 1e-3, axis=-1)] for image, n in zip(images, normal)]
    colours = [pixels[:, :3].astype(int) for pixels in front]
    assert all(len(c) > 20 for c in colours)
    reference = np.median(colours[0], axis=0)
    for c in colours:
        assert np.abs(np.median(c, axis=0) - reference).max() <= 1
    # ... and the other faces are lit differently (the lighting does vary over the object)
    assert np.abs(images[1, SIZE // 2, SIZE // 2 + 8, :3].astype(int) - reference).max() > 3


def test_several_renderers_in_one_process_do_not_interfere(renderer):
    box = coloured(trimesh.creation.box((0.5, 0.5, 0.5)), (120, 30, 200, 255))
    cameras = [Camera(20.0, 10.0, 1.6), Camera(200.0, 40.0, 1.5)]
    before = renderer.render(box, cameras)
    other = Renderer(24)
    other.render(box, cameras)
    assert np.array_equal(renderer.render(box, cameras), before)
    other.release()  # releasing another renderer leaves this one working
    assert np.array_equal(renderer.render(box, cameras), before)
    depth, _ = renderer.render_geometry(box, cameras)
    assert (depth > 0).any()


def test_shading_normal_stays_finite_where_screen_derivatives_degenerate(renderer):
    """NVIDIA's driver gives zero position derivatives on some pixels of tiny or edge-on crease
    triangles; a NaN normal there rendered as white speckles. Force that case (a constant world
    position, so dFdx = dFdy = 0) and a zero vertex normal through the renderer's own GLSL."""
    from mvdpp.data import render

    vertex = """
    #version 330
    in vec2 in_xy;
    uniform vec3 u_normal;
    out vec3 v_normal; out float v_crease; out vec4 v_color; out vec2 v_uv; out vec3 v_world;
    flat out vec3 v_campos; out float v_depth;
    void main() {
        gl_Position = vec4(in_xy, 0.0, 1.0);
        v_normal = u_normal; v_crease = 1.0; v_color = vec4(1.0); v_uv = vec2(0.0);
        v_world = vec3(0.1, 0.2, 0.3); v_campos = vec3(0.0, 0.0, 2.0); v_depth = 1.0;
    }
    """
    fragment = render._FRAGMENT_HEADER + render._NORMAL_GLSL + """
    out vec4 f_out;
    void main() { f_out = vec4(shading_normal(), 1.0); }
    """
    ctx = renderer.ctx
    with ctx:
        program = ctx.program(vertex_shader=vertex, fragment_shader=fragment)
        triangle = ctx.buffer(np.array([-1, -1, 3, -1, -1, 3], dtype="f4").tobytes())
        vao = ctx.vertex_array(program, [(triangle, "2f", "in_xy")])
        target = ctx.framebuffer([ctx.renderbuffer((8, 8), 4, dtype="f4")])
        target.use()
        for smooth in ((0.0, 0.6, 0.8), (0.0, 0.0, 0.0)):
            program["u_normal"].value = smooth
            target.clear(0.0, 0.0, 0.0, 0.0)
            vao.render()
            out = np.frombuffer(target.read(components=4, dtype="f4"), dtype=np.float32).reshape(8, 8, 4)
            assert np.isfinite(out).all(), smooth
            assert np.allclose(np.linalg.norm(out[..., :3], axis=-1), 1.0, atol=1e-4), smooth
            if any(smooth):  # degenerate derivatives keep the vertex normal, facing the camera
                assert np.allclose(out[..., :3], smooth, atol=1e-4)
        for gl_object in (vao, triangle, target, program):
            gl_object.release()


def test_a_refused_render_target_is_a_clear_error_and_keeps_nothing(monkeypatch):
    """A GL driver out of memory refuses a framebuffer ("not complete"): the renderer says so in
    one line (a RuntimeError a DataLoader worker passes on by type), gives back the buffers it
    did get, and renders normally once the driver has memory again."""
    import moderngl

    from mvdpp.data.render import RenderTargetError

    small = Renderer(16)
    mesh = coloured(trimesh.creation.icosphere(subdivisions=2, radius=0.4), (90, 90, 200, 255))
    released, made = [], []
    real_framebuffer, real_release = moderngl.Context.framebuffer, moderngl.Renderbuffer.release

    def refusing_framebuffer(ctx, *attachments, **kw):
        made.extend(attachments)
        if len(made) > 2:  # the second (multisampled) framebuffer, after the first succeeded
            raise moderngl.Error("the framebuffer is not complete (UNSUPPORTED)")
        return real_framebuffer(ctx, *attachments, **kw)

    def counted_release(self):
        released.append(self)
        real_release(self)

    monkeypatch.setattr(moderngl.Context, "framebuffer", refusing_framebuffer)
    monkeypatch.setattr(moderngl.Renderbuffer, "release", counted_release)
    with pytest.raises(RenderTargetError, match=r"OpenGL could not make a 16x\d+ px render target "
                                                r"\(the framebuffer is not complete \(UNSUPPORTED\)\); "
                                                r"the GPU's memory is most likely full"):
        small.render(mesh, rig_cameras()[:4])
    assert made and all(any(r is m for r in released) for m in made)  # the four renderbuffers it got
    monkeypatch.setattr(moderngl.Context, "framebuffer", real_framebuffer)
    images = small.render(mesh, rig_cameras()[:4])
    small.release()
    assert images.shape == (4, 16, 16, 4) and images[..., 3].any()
    assert RenderTargetError("worker traceback").args == ("worker traceback",)  # rebuilt from its message
