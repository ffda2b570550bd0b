"""Headless OpenGL renderer for training and evaluation views (moderngl over EGL).

``Renderer(size).render(mesh, cameras)`` returns ``uint8 (N, H, W, 4)``: RGB composited over
white, alpha = coverage (anti-aliased by multisampling), in the project's camera conventions
(mvdpp.rig). All views of one call are drawn in ONE instanced draw call per mesh part into one
tall framebuffer, one tile per view stacked vertically, and read back at once straight into
the output array (the tiles' memory layout already is (N, H, W, 4)):

* each instance is one view: its own MVP matrix and tile; the vertex shader squeezes the view's
  clip space into its tile and ``gl_ClipDistance`` clips triangles at the tile's edges, so a
  view never bleeds into its neighbours;
* the y axis is flipped in clip space so framebuffer row 0 is the image's top row and the
  read-back needs no flip;
* the framebuffer is cleared to white with alpha 0 and objects write alpha 1, so resolving the
  multisampled buffer yields exactly "over white" colour and fractional coverage.

Lighting is Lambertian (view-independent) with directions fixed in the world frame, so every
view of one object sees the same shading: what multi-view training and reconstruction rely on.

Meshes are trimesh objects (a Trimesh or a Scene) with vertex colours, face colours, a UV
texture (SimpleMaterial or PBR baseColor texture/factor) or none (grey), drawn indexed as they
are (no per-corner copies: preparing an object costs a few milliseconds of CPU). Normals are
smooth vertex normals except across creases sharper than ``crease_deg``, where the fragment
shader gives triangles touching such a crease their own flat normal.

One renderer owns one GL context, created lazily in the process that first renders. A
process forked from one that already used OpenGL gets a clear error instead of a context (the
inherited driver state can deadlock): spawn worker processes instead.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DEVICE, BAD_INPUT, MVDPPError
from ..rig import Camera, opengl_projection

#: Bumped whenever the same mesh and cameras render differently, so stored renders (evaluation
#: sets, their cached baselines) made before are told apart. 2: no NaN normals (session 15).
RENDER_REVISION = 2
#: Largest framebuffer side the renderer asks for (views beyond it are drawn in further passes).
MAX_FRAMEBUFFER_SIDE = 32768
#: Largest image side.
MAX_SIZE = 4096
#: Views drawn per pass at most (bounds the framebuffer's memory).
MAX_VIEWS_PER_PASS = 64
DEFAULT_GREY = np.array([180, 180, 180, 255], dtype=np.uint8)
#: The process that made this module's first GL context. A forked child inherits it (and the
#: GL driver's threads and locks, which can deadlock a new context); a spawned one does not.
_CONTEXT_PROCESS: int | None = None


@dataclass(frozen=True)
class Lighting:
    """Lambertian lighting fixed in the world frame: hemisphere ambient + a key and a fill light.

    Directions point from the surface towards the light (unit vectors, world frame).
    """

    ambient: float = 0.45
    key_direction: tuple[float, float, float] = (0.5, -0.6, 0.62)
    key_intensity: float = 0.5
    fill_direction: tuple[float, float, float] = (-0.6, 0.5, 0.2)
    fill_intensity: float = 0.2
    #: How much the ambient light dims on downward-facing surfaces (sky above, ground below).
    sky: float = 0.2

    @classmethod
    def flat(cls) -> "Lighting":
        """No shading: every pixel shows the surface's own colour (albedo)."""
        return cls(ambient=1.0, key_intensity=0.0, fill_intensity=0.0, sky=0.0)

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Lighting":
        """Randomised lighting for training: a key light above the horizon and a dimmer fill."""
        key_az, key_el = rng.uniform(0.0, 360.0), rng.uniform(15.0, 75.0)
        fill_az = key_az + 180.0 + rng.uniform(-60.0, 60.0)
        fill_el = rng.uniform(-20.0, 40.0)
        ambient = float(rng.uniform(0.3, 0.55))
        key = float(rng.uniform(0.35, 0.65))
        fill = float(rng.uniform(0.05, 0.25))
        sky = float(rng.uniform(0.1, 0.3))
        return cls(ambient, _direction(key_az, key_el), key, _direction(fill_az, fill_el), fill, sky)


def _direction(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el))


_VERTEX_SHADER = """
#version 330
in vec3 in_pos;
in vec4 in_normal;   // xyz: smooth normal, w: 1 at crease vertices
in vec4 in_color;
in vec2 in_uv;
in mat4 in_mvp;      // per view (instance)
in vec2 in_tile;     // per view: column, row of its tile
in vec3 in_campos;   // per view: camera position (world)
uniform vec2 u_grid; // columns, rows of tiles
out vec3 v_normal;
out float v_crease;
out vec4 v_color;
out vec2 v_uv;
out vec3 v_world;
flat out vec3 v_campos;
out float v_depth;
void main() {
    vec4 clip = in_mvp * vec4(in_pos, 1.0);
    // keep each view inside its own tile: clip against the view's frustum sides
    gl_ClipDistance[0] = clip.w + clip.x;
    gl_ClipDistance[1] = clip.w - clip.x;
    gl_ClipDistance[2] = clip.w + clip.y;
    gl_ClipDistance[3] = clip.w - clip.y;
    v_depth = clip.w;  // distance along the viewing axis
    clip.y = -clip.y;  // framebuffer row 0 = image top row: no flip on read-back
    clip.x = (clip.x + clip.w * (1.0 + 2.0 * in_tile.x)) / u_grid.x - clip.w;
    clip.y = (clip.y + clip.w * (1.0 + 2.0 * in_tile.y)) / u_grid.y - clip.w;
    gl_Position = clip;
    v_normal = in_normal.xyz;
    v_crease = in_normal.w;
    v_color = in_color;
    v_uv = in_uv;
    v_world = in_pos;
    v_campos = in_campos;
}
"""

# The shading normal: the interpolated vertex normal, except on triangles touching a crease
# vertex (one whose normal strays more than the crease angle from an adjacent face's, e.g. a
# cube's corners): there the face normal, which screen-space derivatives of the world position
# give exactly. Where the derivatives degenerate (NVIDIA's driver returns parallel or zero ones
# on some pixels of small or edge-on triangles), normalize() of a zero vector is NaN, and NaN
# light came out white: speckles over reconstructed meshes and dashes along a box's edges,
# 2-4 dB of PSNR on the H200 and not on llvmpipe (BENCHMARKS.md, session 15). Such pixels keep
# the vertex normal instead; a zero vertex normal falls back to +Z, any unit vector would do.
_NORMAL_GLSL = """
vec3 shading_normal() {
    float smooth_len2 = dot(v_normal, v_normal);
    vec3 n = smooth_len2 > 1e-24 ? v_normal * inversesqrt(smooth_len2) : vec3(0.0, 0.0, 1.0);
    if (v_crease > 0.0) {
        vec3 face = cross(dFdx(v_world), dFdy(v_world));
        float face_len2 = dot(face, face);
        if (face_len2 > 1e-36 && face_len2 < 1e36) {  // false for zero, inf and NaN alike
            face *= inversesqrt(face_len2);
            n = dot(face, n) < 0.0 ? -face : face;
        }
    }
    if (dot(n, v_campos - v_world) < 0.0) n = -n;  // two-sided: open or inconsistently wound meshes
    return n;
}
"""

_FRAGMENT_HEADER = """
#version 330
in vec3 v_normal;
in float v_crease;
in vec4 v_color;
in vec2 v_uv;
in vec3 v_world;
flat in vec3 v_campos;
in float v_depth;
"""

_COLOR_FRAGMENT_SHADER = _FRAGMENT_HEADER + _NORMAL_GLSL + """
uniform sampler2D u_texture;
uniform float u_ambient;
uniform float u_sky;
uniform vec3 u_key_dir;
uniform float u_key;
uniform vec3 u_fill_dir;
uniform float u_fill;
out vec4 f_color;
void main() {
    vec3 n = shading_normal();
    vec3 albedo = v_color.rgb * texture(u_texture, v_uv).rgb;
    float light = u_ambient * (1.0 - u_sky + u_sky * n.z)
                + u_key * max(dot(n, u_key_dir), 0.0)
                + u_fill * max(dot(n, u_fill_dir), 0.0);
    f_color = vec4(min(albedo * light, vec3(1.0)), 1.0);
}
"""

_GEOMETRY_FRAGMENT_SHADER = _FRAGMENT_HEADER + _NORMAL_GLSL + """
out vec4 f_geometry;
void main() {
    f_geometry = vec4(shading_normal(), v_depth);
}
"""


@dataclass
class MeshArrays:
    """One drawable part as indexed arrays, ready for upload."""

    positions: np.ndarray  # float32 (V, 3)
    normals: np.ndarray  # float32 (V, 4): smooth (area-weighted) vertex normal, crease flag
    colors: np.ndarray  # uint8 (V, 4)
    uvs: np.ndarray | None  # float32 (V, 2), with ``texture`` only
    texture: np.ndarray | None  # uint8 (H, W, 4), bottom row first (OpenGL's order), or None
    indices: np.ndarray  # uint32 (F, 3)

    @property
    def triangles(self) -> int:
        return len(self.indices)


def mesh_parts(mesh, crease_deg: float = 35.0) -> list[MeshArrays]:
    """Split a trimesh Trimesh or Scene (or a list of Trimesh) into drawable parts."""
    import trimesh

    if isinstance(mesh, trimesh.Scene):
        meshes = [m for m in mesh.dump(concatenate=False) if isinstance(m, trimesh.Trimesh)]
    elif isinstance(mesh, trimesh.Trimesh):
        meshes = [mesh]
    elif isinstance(mesh, (list, tuple)) and all(isinstance(m, trimesh.Trimesh) for m in mesh):
        meshes = list(mesh)
    else:
        raise MVDPPError(BAD_INPUT, f"cannot render a {type(mesh).__name__}", "pass a trimesh.Trimesh or trimesh.Scene")
    parts = [_part_arrays(m, crease_deg) for m in meshes if len(m.faces)]
    if not parts:
        raise MVDPPError(BAD_INPUT, "the mesh to render has no triangles", "check that the asset contains a surface mesh")
    return parts


def vertex_normals(vertices: np.ndarray, faces: np.ndarray, crease_deg: float = 35.0) -> np.ndarray:
    """Area-weighted unit vertex normals plus a crease flag: float32 (V, 4).

    The flag is 1 where an adjacent face's normal is more than ``crease_deg`` from the vertex
    normal. Plain numpy, much faster than trimesh's normals: it runs for every rendered object.
    """
    # per-coordinate contiguous arrays and np.take: ~3x faster than (F, 3, 3) fancy indexing
    count = len(vertices)
    x, y, z = (np.ascontiguousarray(vertices[:, k], dtype=np.float64) for k in range(3))
    i0, i1, i2 = (np.ascontiguousarray(faces[:, k]) for k in range(3))
    ax, ay, az = (np.take(c, i1) - np.take(c, i0) for c in (x, y, z))
    bx, by, bz = (np.take(c, i2) - np.take(c, i0) for c in (x, y, z))
    face = (ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx)  # length = twice the area
    sums = [sum(np.bincount(i, weights=f, minlength=count) for i in (i0, i1, i2)) for f in face]
    length = np.sqrt(sums[0] ** 2 + sums[1] ** 2 + sums[2] ** 2)
    length[length == 0] = 1.0
    normal = [c / length for c in sums]
    face_length = np.sqrt(face[0] ** 2 + face[1] ** 2 + face[2] ** 2)
    face_length[face_length == 0] = 1.0
    threshold = math.cos(math.radians(crease_deg)) * face_length
    normals = np.zeros((count, 4), dtype=np.float32)
    for k in range(3):
        normals[:, k] = normal[k]
    for i in (i0, i1, i2):  # corners whose vertex normal strays from the face normal mark a crease
        cosine_times_length = sum(np.take(normal[k], i) * face[k] for k in range(3))
        normals[i[cosine_times_length < threshold], 3] = 1.0
    return normals


def _part_arrays(mesh, crease_deg: float) -> MeshArrays:
    faces = np.asarray(mesh.faces, dtype=np.int64)
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    visual = mesh.visual
    uvs = texture = None
    if visual.kind == "face":
        # per-face colours need their own corners: unindex this part
        vertices = vertices[faces].reshape(-1, 3)
        colors = np.repeat(np.asarray(visual.face_colors, dtype=np.uint8), 3, axis=0)
        faces = np.arange(len(vertices), dtype=np.int64).reshape(-1, 3)
    elif visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.uint8)
    elif visual.kind == "texture":
        image, factor = _material_image_and_factor(visual.material)
        colors = np.broadcast_to(factor, (len(vertices), 4))
        if image is not None and visual.uv is not None and len(visual.uv) == len(vertices):
            uvs = np.ascontiguousarray(visual.uv, dtype=np.float32)
            texture = image
    else:
        colors = np.broadcast_to(DEFAULT_GREY, (len(vertices), 4))
    return MeshArrays(
        positions=np.ascontiguousarray(vertices),
        normals=vertex_normals(vertices, faces, crease_deg),
        colors=np.ascontiguousarray(colors, dtype=np.uint8),
        uvs=uvs,
        texture=texture,
        indices=np.ascontiguousarray(faces, dtype=np.uint32),
    )


def _material_image_and_factor(material) -> tuple[np.ndarray | None, np.ndarray]:
    """Base-colour texture (bottom row first, RGBA) and colour factor of a trimesh material."""
    image = getattr(material, "baseColorTexture", None)
    factor = getattr(material, "baseColorFactor", None)
    if image is None:
        image = getattr(material, "image", None)
    if factor is None:
        factor = getattr(material, "diffuse", None) if image is None else None
    factor = np.array([255, 255, 255, 255] if factor is None else factor, dtype=np.float64).reshape(-1)
    if factor.max() <= 1.0:  # some loaders keep factors as floats in [0, 1]
        factor = factor * 255.0
    factor = np.clip(np.resize(factor, 4), 0, 255).astype(np.uint8)
    if image is not None:
        # trimesh's UVs put v = 0 at the image's bottom (OpenGL); PIL's row 0 is the top
        image = np.ascontiguousarray(np.asarray(image.convert("RGBA"), dtype=np.uint8)[::-1])
    return image, factor


def _view_instances(cameras: list[Camera]) -> np.ndarray:
    """Per-view instance data: MVP (column-major), tile (column, row), camera position.

    Tiles form one column (view i in tile row i): the framebuffer's memory is then exactly
    (views, H, W, channels) and reads straight into the output array.
    """
    data = np.zeros((len(cameras), 21), dtype=np.float32)
    projections: dict[float, np.ndarray] = {}
    for i, camera in enumerate(cameras):
        projection = projections.setdefault(camera.fov_deg, opengl_projection(camera.fov_deg))
        mvp = projection @ np.linalg.inv(camera.c2w)
        data[i, :16] = mvp.T.reshape(-1)  # GL reads matrices column by column
        data[i, 16:18] = (0, i)
        data[i, 18:21] = camera.c2w[:3, 3]
    return data


class RenderTargetError(RuntimeError):
    """The GL driver refused a render target: on a GPU shared with training, most often full memory.

    A plain RuntimeError with a one-string constructor, so that a DataLoader worker's failure
    reaches the main process as this type (torch rebuilds worker exceptions from their message).
    """


class Renderer:
    """Renders batches of views of one mesh. Reuse one instance: it keeps its GL context.

    ``samples``: multisampling per pixel (anti-aliased edges and fractional alpha); 0 disables.
    ``device_index``: the EGL device. Default: env MVDPP_EGL_DEVICE; else env LOCAL_RANK (one GPU
    per training process, as torchrun / accelerate number them) falling back to device 0 when
    there is no such device (e.g. Mesa's single software device); else 0.
    """

    def __init__(self, size: int = 256, samples: int = 4, crease_deg: float = 35.0, device_index: int | None = None):
        if not isinstance(size, int) or size < 8 or size > MAX_SIZE:
            raise MVDPPError(BAD_INPUT, f"render size {size!r} is out of range", f"use an integer between 8 and {MAX_SIZE}")
        self.size = size
        self.samples = samples
        self.crease_deg = crease_deg
        self.device_index = device_index
        self._ctx = None
        self._pid = None

    def __getstate__(self) -> dict:
        # GL objects cannot travel to another process: a copy makes its own context when used
        keep = ("size", "samples", "crease_deg", "device_index")
        return {key: self.__dict__[key] for key in keep} | {"_ctx": None, "_pid": None}

    # -- context and resources ------------------------------------------------------------
    @property
    def ctx(self):
        if self._ctx is None or self._pid != os.getpid():
            self._create_context()
        return self._ctx

    @property
    def gl_renderer(self) -> str:
        """The OpenGL renderer string (e.g. 'llvmpipe ...' or 'NVIDIA H100 ...')."""
        return self.ctx.info["GL_RENDERER"]

    def _create_context(self) -> None:
        import moderngl

        global _CONTEXT_PROCESS
        if _CONTEXT_PROCESS is not None and _CONTEXT_PROCESS != os.getpid():
            raise MVDPPError(
                DEVICE,
                "this process was forked from one that already used OpenGL; a new GL context here can hang",
                "start DataLoader workers with multiprocessing_context='spawn' (MultiViewStream.loader does)",
            )
        ctx, failure = None, None
        for device in _device_candidates(self.device_index):
            try:
                ctx = moderngl.create_standalone_context(backend="egl", device_index=device)
                break
            except Exception as exc:  # noqa: BLE001 - any loader failure means the same to the user
                failure = exc
        if ctx is None:
            raise MVDPPError(
                DEVICE,
                f"cannot create a headless OpenGL (EGL) context: {failure}",
                "install the EGL/OpenGL libraries (libegl1, libgl1, Mesa's llvmpipe or an NVIDIA driver)",
            ) from failure
        self._ctx, self._pid = ctx, os.getpid()
        if _CONTEXT_PROCESS != os.getpid():
            _exit_quietly_if_worker()
        _CONTEXT_PROCESS = os.getpid()
        with ctx:
            self._set_up(ctx)

    def _set_up(self, ctx) -> None:
        import moderngl

        self._samples = min(self.samples, ctx.max_samples) if self.samples else 0
        max_side = min(MAX_FRAMEBUFFER_SIDE, ctx.info["GL_MAX_RENDERBUFFER_SIZE"], ctx.info["GL_MAX_TEXTURE_SIZE"])
        self._views_per_pass = max(1, min(MAX_VIEWS_PER_PASS, max_side // self.size))
        self._color_program = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_COLOR_FRAGMENT_SHADER)
        self._geometry_program = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_GEOMETRY_FRAGMENT_SHADER)
        self._instances = ctx.buffer(reserve=self._views_per_pass * 21 * 4)
        self._white = ctx.texture((1, 1), 4, bytes([255, 255, 255, 255]))
        self._zero_uvs = ctx.buffer(reserve=self._views_per_pass * 2 * 4)
        self._targets: dict = {}
        for clip_plane in range(4):
            ctx.enable_direct(0x3000 + clip_plane)  # GL_CLIP_DISTANCE0..3
        ctx.enable(moderngl.DEPTH_TEST)

    def _target(self, kind: str, views: int) -> tuple:
        """(tile rows, multisampled framebuffer or None, single-sample framebuffer) for ``views``.

        Grow-only: one set per kind, as tall as the most views asked for so far, so a stream
        whose view count varies holds one set of buffers, not one per count.
        """
        held = self._targets.get(kind)
        if held is not None and held[0] >= views:
            return held
        if held is not None:
            for gl_object in held[3]:
                gl_object.release()
        import moderngl

        try:
            self._targets[kind] = self._make_target(kind, views)
        except moderngl.Error as exc:
            self._targets.pop(kind, None)
            raise RenderTargetError(f"OpenGL could not make a {self.size}x{views * self.size} px render target "
                                    f"({exc}); the GPU's memory is most likely full") from exc
        return self._targets[kind]

    def _make_target(self, kind: str, views: int) -> tuple:
        ctx, shape, owned = self.ctx, (self.size, views * self.size), []

        def framebuffer(dtype: str = "f1", samples: int = 0):
            colour = ctx.renderbuffer(shape, 4, samples=samples, dtype=dtype)
            owned.append(colour)
            depth = ctx.depth_renderbuffer(shape, samples=samples)
            owned.append(depth)
            owned.append(ctx.framebuffer(colour, depth))
            return owned[-1]

        try:
            if kind == "geometry":  # float colour: positions and normals, never multisampled
                single, multisampled = framebuffer("f4"), None
            else:
                single = framebuffer()
                multisampled = framebuffer(samples=self._samples) if self._samples else None
        except Exception:
            for gl_object in owned:  # a refused target must not hold on to the memory it did get
                gl_object.release()
            raise
        return views, multisampled, single, owned

    def _upload(self, parts: list[MeshArrays], program):
        ctx, uploaded = self.ctx, []
        for part in parts:
            buffers = [ctx.buffer(part.positions), ctx.buffer(part.normals), ctx.buffer(part.colors), ctx.buffer(part.indices)]
            if part.uvs is not None:
                buffers.append(ctx.buffer(part.uvs))
                uv_binding = (buffers[-1], "2f", "in_uv")
            else:  # untextured: one constant uv for every vertex (an instanced zero buffer)
                uv_binding = (self._zero_uvs, "2f/i", "in_uv")
            vao = ctx.vertex_array(
                program,
                [
                    (buffers[0], "3f", "in_pos"),
                    (buffers[1], "4f", "in_normal"),
                    (buffers[2], "4f1", "in_color"),
                    uv_binding,
                    (self._instances, "16f 2f 3f/i", "in_mvp", "in_tile", "in_campos"),
                ],
                index_buffer=buffers[3],
                index_element_size=4,
                skip_errors=True,  # the geometry pass ignores colour and uv
            )
            texture = None
            if part.texture is not None:
                h, w = part.texture.shape[:2]
                texture = ctx.texture((w, h), 4, part.texture.tobytes())
                texture.build_mipmaps()
                texture.anisotropy = 4.0
            uploaded.append((vao, buffers, texture, part.indices.size))
        return uploaded

    @staticmethod
    def _release(uploaded) -> None:
        for vao, buffers, texture, _ in uploaded:
            vao.release()
            for buffer in buffers:
                buffer.release()
            if texture is not None:
                texture.release()

    def _passes(self, cameras):
        cameras = list(cameras)
        if not cameras:
            raise MVDPPError(BAD_INPUT, "no cameras to render", "pass at least one mvdpp.rig.Camera")
        step = self._views_per_pass
        for start in range(0, len(cameras), step):
            chunk = cameras[start : start + step]
            self._instances.write(_view_instances(chunk).tobytes())
            yield start, chunk

    # -- public -----------------------------------------------------------------------------
    def render(self, mesh, cameras: list[Camera], lighting: Lighting | None = None) -> np.ndarray:
        """RGBA views ``uint8 (N, size, size, 4)``: colour over white, alpha = coverage."""
        with self.ctx:  # make this renderer's context current: a process may hold several
            return self._render_color(mesh, cameras, lighting)

    def _render_color(self, mesh, cameras, lighting) -> np.ndarray:
        parts = mesh if isinstance(mesh, list) and mesh and isinstance(mesh[0], MeshArrays) else mesh_parts(mesh, self.crease_deg)
        lighting = lighting or Lighting()
        ctx, program = self.ctx, self._color_program
        program["u_ambient"].value = lighting.ambient
        program["u_sky"].value = lighting.sky
        program["u_key_dir"].value = tuple(_unit(lighting.key_direction))
        program["u_key"].value = lighting.key_intensity
        program["u_fill_dir"].value = tuple(_unit(lighting.fill_direction))
        program["u_fill"].value = lighting.fill_intensity
        program["u_texture"].value = 0
        uploaded = self._upload(parts, program)
        try:
            out = np.empty((len(cameras), self.size, self.size, 4), dtype=np.uint8)
            for start, chunk in self._passes(cameras):
                rows, multisampled, resolved, _ = self._target("color", len(chunk))
                target = multisampled or resolved
                target.use()
                target.clear(1.0, 1.0, 1.0, 0.0, depth=1.0)
                program["u_grid"].value = (1, rows)
                for vao, _, texture, vertices in uploaded:
                    (texture or self._white).use(0)
                    vao.render(vertices=vertices, instances=len(chunk))
                if multisampled is not None:
                    ctx.copy_framebuffer(resolved, multisampled)
                viewport = (0, 0, self.size, len(chunk) * self.size)  # the tiles in use, from row 0
                resolved.read_into(out[start : start + len(chunk)], viewport=viewport, components=4, alignment=1)
            return out
        finally:
            self._release(uploaded)

    def render_geometry(self, mesh, cameras: list[Camera]) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel geometry, no anti-aliasing: (depth float32 (N, H, W), normal float32 (N, H, W, 3)).

        depth is the distance along each camera's viewing axis (as mvdpp.rig.project_points),
        0 where no surface is seen; normals are unit world-frame normals facing the camera.
        """
        with self.ctx:
            return self._render_geometry(mesh, cameras)

    def _render_geometry(self, mesh, cameras) -> tuple[np.ndarray, np.ndarray]:
        parts = mesh if isinstance(mesh, list) and mesh and isinstance(mesh[0], MeshArrays) else mesh_parts(mesh, self.crease_deg)
        program = self._geometry_program
        uploaded = self._upload(parts, program)
        try:
            out = np.empty((len(cameras), self.size, self.size, 4), dtype=np.float32)
            for start, chunk in self._passes(cameras):
                rows, _, target, _ = self._target("geometry", len(chunk))
                target.use()
                target.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                program["u_grid"].value = (1, rows)
                for vao, _, _, vertices in uploaded:
                    vao.render(vertices=vertices, instances=len(chunk))
                viewport = (0, 0, self.size, len(chunk) * self.size)
                target.read_into(out[start : start + len(chunk)], viewport=viewport, components=4, alignment=1, dtype="f4")
            return out[..., 3].copy(), out[..., :3].copy()
        finally:
            self._release(uploaded)

    def release(self) -> None:
        """Free the GL context now (it is also freed when the process ends)."""
        if self._ctx is not None and self._pid == os.getpid():
            self._ctx.release()
        self._ctx = None


def _exit_quietly_if_worker() -> None:
    """In a worker process (DataLoader or other multiprocessing child) that renders, end the
    process at exit without the C++ teardown of the GL libraries. A render worker stopped while
    its share was unfinished (a training run ending during the next epoch's prefetch) aborted
    there about half the time: "terminate called without an active exception", and the parent
    printed "DataLoader worker ... is killed by signal: Aborted" (an abort in 5 of 9 stops
    without this, 0 of 6 with it: docs/data.md, "Processes"). The worker's exit status is then
    0. The main process exits as usual."""
    import atexit
    import multiprocessing

    if multiprocessing.parent_process() is None:
        return

    def end_now() -> None:
        import multiprocessing.util
        import sys

        # What the normal exit would still do: multiprocessing's finalizers flush queue feeder
        # threads (objects already put must reach the reader) and join child processes.
        multiprocessing.util._exit_function()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(0)

    atexit.register(end_now)


def _device_candidates(device_index: int | None) -> list[int]:
    """EGL devices to try, in order (see Renderer's doc)."""
    if device_index is not None:
        return [int(device_index)]
    if os.environ.get("MVDPP_EGL_DEVICE"):
        return [int(os.environ["MVDPP_EGL_DEVICE"])]
    local_rank = int(os.environ.get("LOCAL_RANK", 0) or 0)
    return [local_rank, 0] if local_rank else [0]


def _unit(vector) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v
