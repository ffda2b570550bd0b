"""Procedural training objects in the spirit of Zeroverse (LRM-Zero; see PAPER.md).

``make_object(seed)`` builds, deterministically from the seed, an object of 1-9 primitives
(cube, sphere/ellipsoid, cylinder, cone, torus) with random size, rotation and position, each
with its own random surface pattern (flat, stripes, checkers, noise, gradient), some with
boolean-difference cuts (a cutter centred on the part's surface, meshed through an SDF: see
mvdpp.data.sdf), some with bumpy height-field surfaces, plus thin wire parts. The result is a
trimesh.Trimesh with vertex colours, normalised like every object of the project (bounding box
centred at the origin, longest side 1): the ground truth for geometry metrics.

Appearance is baked into vertex colours of finely tessellated parts (edges at most ``detail``
long before normalisation, ~2-3 px at 256 px): renders are fast (no textures) and the
coloured ground-truth mesh is exactly what was rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BAD_INPUT, MVDPPError
from . import sdf
from .normalize import normalise_mesh
from .patterns import Pattern, random_colour

PRIMITIVES = ("cube", "sphere", "cylinder", "cone", "torus")
#: Default tessellation: longest triangle edge before normalisation (objects span ~1 unit).
DEFAULT_DETAIL = 0.03
CUT_PROBABILITY = 0.3
BUMP_PROBABILITY = 0.25
WIRE_PROBABILITY = 0.35
#: Mixed into the seed so procedural objects do not share random streams with other uses of it.
_SEED_SALT = 0x6D766470


@dataclass
class Primitive:
    """One primitive in its local frame (centred, main axis along z)."""

    kind: str
    size: np.ndarray  # half extents (cube), radii (sphere), (radius, half height, -) or (major, minor, -)

    @classmethod
    def random(cls, rng: np.random.Generator, kind: str | None = None) -> "Primitive":
        kind = kind or str(rng.choice(PRIMITIVES))
        scale = rng.uniform(0.12, 0.4)
        if kind in ("cube", "sphere"):
            size = scale * rng.uniform(0.5, 1.0, size=3)
            if kind == "sphere" and rng.uniform() < 0.4:
                size[:] = size[0]  # a true sphere sometimes
        elif kind in ("cylinder", "cone"):
            size = np.array([scale * rng.uniform(0.3, 1.0), scale * rng.uniform(0.5, 1.0), 0.0])
        else:  # torus: major radius, minor radius
            major = scale * rng.uniform(0.6, 1.0)
            size = np.array([major, major * rng.uniform(0.15, 0.45), 0.0])
        return cls(kind, size)

    @property
    def extent(self) -> float:
        """Largest size of the primitive (for pattern scales)."""
        if self.kind == "torus":
            return 2.0 * (self.size[0] + self.size[1])
        return 2.0 * float(self.size.max())

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.kind in ("cube", "sphere"):
            half = self.size
        elif self.kind == "torus":
            r = self.size[0] + self.size[1]
            half = np.array([r, r, self.size[1]])
        else:
            half = np.array([self.size[0], self.size[0], self.size[1]])
        return -half, half

    def distance(self, p: np.ndarray) -> np.ndarray:
        if self.kind == "cube":
            return sdf.box(p, self.size)
        if self.kind == "sphere":
            return sdf.ellipsoid(p, self.size)
        if self.kind == "cylinder":
            return sdf.cylinder(p, self.size[0], self.size[1])
        if self.kind == "cone":
            return sdf.cone(p, self.size[0], self.size[1])
        return sdf.torus(p, self.size[0], self.size[1])

    def mesh(self, detail: float):
        import trimesh

        creation = trimesh.creation
        if self.kind == "cube":
            mesh = creation.box(extents=2.0 * self.size)
        elif self.kind == "sphere":
            mesh = creation.icosphere(subdivisions=3, radius=1.0)
            mesh.vertices = mesh.vertices * self.size
        elif self.kind == "cylinder":
            mesh = creation.cylinder(self.size[0], 2.0 * self.size[1], sections=_sections(self.size[0], detail))
        elif self.kind == "cone":
            mesh = creation.cone(self.size[0], 2.0 * self.size[1], sections=_sections(self.size[0], detail))
            mesh.apply_translation((0.0, 0.0, -self.size[1]))
        else:
            mesh = creation.torus(
                self.size[0], self.size[1],
                major_sections=_sections(self.size[0], detail), minor_sections=_sections(self.size[1], detail),
            )
        return _subdivide(mesh, detail)


def _sections(radius: float, detail: float) -> int:
    return int(np.clip(math.ceil(2.0 * math.pi * radius / detail), 12, 128))


def _subdivide(mesh, detail: float):
    import trimesh

    vertices, faces = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=detail, max_iter=12)
    return trimesh.Trimesh(vertices, faces, process=True)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (from a random unit quaternion)."""
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _cut_part(primitive: Primitive, surface_point: np.ndarray, rng: np.random.Generator, detail: float):
    """Mesh of ``primitive`` minus a random cutter centred at ``surface_point`` (local frame)."""
    import trimesh

    cutter = Primitive.random(rng, kind=str(rng.choice(("cube", "sphere", "cylinder"))))
    cutter.size = cutter.size / cutter.size.max() * primitive.extent * rng.uniform(0.15, 0.35)
    rotation = random_rotation(rng)

    def distance(p):
        local = (p - surface_point) @ rotation  # into the cutter's frame
        return np.maximum(primitive.distance(p), -cutter.distance(local))

    lower, upper = primitive.bounds()
    level_set = sdf.mesh_level_set(distance, lower, upper, voxel=0.6 * detail)
    if level_set is None:  # the cutter removed everything: keep the part uncut
        return primitive.mesh(detail)
    return trimesh.Trimesh(*level_set, process=True)


def _bump(mesh, rng: np.random.Generator, extent: float):
    """Height-field surface: displace vertices along their normals by smooth noise."""
    from .patterns import value_noise

    amplitude = extent * rng.uniform(0.02, 0.06)
    frequency = rng.uniform(3.0, 8.0) / extent
    noise = value_noise(mesh.vertices * frequency, rng.permutation(256)) - 0.5
    mesh.vertices = mesh.vertices + mesh.vertex_normals * (2.0 * amplitude * noise)[:, None]
    return mesh


def _wire(rng: np.random.Generator, detail: float):
    """A thin wire part: the edges of a random box, or a random open polyline, as tubes."""
    import trimesh

    radius = rng.uniform(0.004, 0.012)
    if rng.uniform() < 0.5:
        half = rng.uniform(0.1, 0.4, size=3)
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
        corners = corners @ random_rotation(rng).T + rng.uniform(-0.25, 0.25, size=3)
        edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
        segments = [(corners[a], corners[b]) for a, b in edges]
    else:
        points = rng.uniform(-0.45, 0.45, size=(int(rng.integers(3, 7)), 3))
        segments = list(zip(points[:-1], points[1:]))
    tubes = [
        trimesh.creation.cylinder(radius, segment=np.array([a, b]), sections=8)
        for a, b in segments
        if np.linalg.norm(b - a) > 1e-3
    ]
    mesh = trimesh.util.concatenate(tubes)
    mesh = _subdivide(mesh, 4 * detail)  # long thin tubes: only along their length
    colour = np.append(random_colour(rng), 1.0)
    mesh.visual.vertex_colors = np.tile(np.round(colour * 255).astype(np.uint8), (len(mesh.vertices), 1))
    return mesh


def make_object(seed: int, detail: float = DEFAULT_DETAIL, max_primitives: int = 9):
    """The procedural object of ``seed``: a normalised trimesh.Trimesh with vertex colours."""
    import trimesh

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MVDPPError(BAD_INPUT, f"object seed {seed!r} is not a non-negative integer", "pass an int >= 0")
    if not 0.002 <= detail <= 0.2:
        raise MVDPPError(BAD_INPUT, f"detail {detail!r} is out of range", "use a triangle edge length in [0.002, 0.2]")
    rng = np.random.default_rng([int(seed), _SEED_SALT])
    count = int(rng.integers(1, max_primitives + 1))
    parts = []
    for _ in range(count):
        primitive = Primitive.random(rng)
        if rng.uniform() < CUT_PROBABILITY:
            surface = primitive.mesh(4 * detail).vertices  # coarse mesh: only to pick a surface point
            mesh = _cut_part(primitive, surface[rng.integers(len(surface))], rng, detail)
        else:
            mesh = primitive.mesh(detail)
            if primitive.kind in ("sphere", "torus") and rng.uniform() < BUMP_PROBABILITY:
                mesh = _bump(mesh, rng, primitive.extent)
        pattern = Pattern.random(rng, primitive.extent)
        mesh.visual.vertex_colors = pattern.colours(mesh.vertices)
        transform = np.eye(4)
        transform[:3, :3] = random_rotation(rng)
        transform[:3, 3] = rng.uniform(-0.3, 0.3, size=3) if count > 1 else 0.0
        mesh.apply_transform(transform)
        parts.append(mesh)
    if rng.uniform() < WIRE_PROBABILITY:
        for _ in range(int(rng.integers(1, 3))):
            parts.append(_wire(rng, detail))
    mesh = trimesh.util.concatenate(parts)
    return normalise_mesh(mesh)
