"""The camera conventions of the whole project, in one place.

Everything that places a camera (the training renderer, the reconstruction, the result folder's
cameras.json and the Blender importer) goes through this module, so there is one definition of:

* World frame: Blender's. Right-handed, +Z up (gravity is -Z), the object centred at the origin
  with its longest bounding-box side scaled to 1 (it spans [-0.5, 0.5]; see PAPER.md for why
  this project departs from the paper's [-1, 1]). A ball of diameter 1 is inside every rig
  view; the corners of an object that fills the whole unit cube can fall up to ~10% of the
  image outside some views, so consumers treat pixels outside an image as unknown, not empty.
* Azimuth: degrees around +Z. Azimuth 0 puts the camera on the -Y axis looking towards +Y
  (Blender's "front" view); azimuth 90 puts it on +X ("right" view), i.e. counter-clockwise seen
  from above. Azimuth 0 of the output rig is the azimuth of the first condition image.
* Elevation: degrees above the XY plane; positive looks down on the object.
* Camera-to-world matrices (c2w): Blender's camera convention, the same as OpenGL's: the camera
  looks along its local -Z, local +Y is up in the image, local +X is right. A Blender camera
  object takes such a matrix as its ``matrix_world`` unchanged.
* Field of view: horizontal = vertical (square images), in degrees.

Only numpy and the standard library are used: the Blender extension imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: The paper's fixed output rig: 8 azimuths x 4 elevations at distance 1.5, 60 degree FoV.
RIG_AZIMUTHS_DEG: tuple[float, ...] = tuple(45.0 * i for i in range(8))
RIG_ELEVATIONS_DEG: tuple[float, ...] = (-30.0, 0.0, 30.0, 60.0)
RIG_DISTANCE: float = 1.5
FOV_DEG: float = 60.0
NUM_RIG_VIEWS: int = len(RIG_AZIMUTHS_DEG) * len(RIG_ELEVATIONS_DEG)  # 32
#: Condition views the model accepts (and the number of condition slots of its view embedding).
MAX_CONDITION_VIEWS: int = 10
#: The training input-camera distribution (PAPER.md, "Training inputs").
INPUT_ELEVATION_RANGE_DEG: tuple[float, float] = (-10.0, 45.0)
INPUT_DISTANCE_RANGE: tuple[float, float] = (1.5, 2.2)

WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Camera:
    """One pinhole camera looking at the origin, in the project's conventions (module doc)."""

    azimuth_deg: float
    elevation_deg: float
    distance: float
    fov_deg: float = FOV_DEG
    #: Position in the output rig (0-31), or None for a camera that is not a rig view.
    index: int | None = None
    c2w: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "c2w", orbit_c2w(self.azimuth_deg, self.elevation_deg, self.distance))

    @property
    def position(self) -> np.ndarray:
        return self.c2w[:3, 3].copy()

    @property
    def w2c(self) -> np.ndarray:
        return np.linalg.inv(self.c2w)

    def focal_px(self, size: int) -> float:
        """Focal length in pixels for a square image ``size`` pixels wide."""
        return focal_length_px(size, self.fov_deg)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "azimuth_deg": float(self.azimuth_deg),
            "elevation_deg": float(self.elevation_deg),
            "distance": float(self.distance),
            "fov_deg": float(self.fov_deg),
            "c2w": [[float(v) for v in row] for row in self.c2w],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Camera":
        return cls(
            azimuth_deg=float(data["azimuth_deg"]),
            elevation_deg=float(data["elevation_deg"]),
            distance=float(data["distance"]),
            fov_deg=float(data.get("fov_deg", FOV_DEG)),
            index=None if data.get("index") is None else int(data["index"]),
        )


def orbit_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """World position of a camera on the orbit (see the module doc for the angle conventions)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])


def look_at_c2w(position, target=(0.0, 0.0, 0.0), up=WORLD_UP) -> np.ndarray:
    """Camera-to-world matrix (Blender camera convention) of a camera at ``position`` aimed at ``target``."""
    position = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-8:  # looking straight up or down: any right vector will do
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -forward, position
    return c2w


def orbit_c2w(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    return look_at_c2w(orbit_position(azimuth_deg, elevation_deg, distance))


def rig_cameras() -> list[Camera]:
    """The 32 output views, elevation-major: index = 8 * elevation_index + azimuth_index."""
    cameras = []
    for e, elevation in enumerate(RIG_ELEVATIONS_DEG):
        for a, azimuth in enumerate(RIG_AZIMUTHS_DEG):
            cameras.append(Camera(azimuth, elevation, RIG_DISTANCE, FOV_DEG, index=e * len(RIG_AZIMUTHS_DEG) + a))
    return cameras


def sample_input_camera(rng: np.random.Generator, azimuth_deg: float | None = None) -> Camera:
    """A training condition camera: rig azimuth (or the one given), random elevation and distance."""
    if azimuth_deg is None:
        azimuth_deg = float(rng.choice(RIG_AZIMUTHS_DEG))
    elevation = float(rng.uniform(*INPUT_ELEVATION_RANGE_DEG))
    distance = float(rng.uniform(*INPUT_DISTANCE_RANGE))
    return Camera(azimuth_deg, elevation, distance, FOV_DEG)


def focal_length_px(size: int, fov_deg: float = FOV_DEG) -> float:
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2.0)


def intrinsics(size: int, fov_deg: float = FOV_DEG) -> np.ndarray:
    """3x3 pixel intrinsics for the OpenCV-style pixel grid (origin top-left, y down)."""
    f = focal_length_px(size, fov_deg)
    return np.array([[f, 0.0, size / 2.0], [0.0, f, size / 2.0], [0.0, 0.0, 1.0]])


def project_points(points: np.ndarray, camera: Camera, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Project world points to pixel coordinates (x right, y down; pixel centres at +0.5).

    Returns (pixels (N, 2), depth (N,)); depth is the distance along the viewing axis.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    w2c = camera.w2c
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -cam[:, 2]
    f = camera.focal_px(size)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = size / 2.0 + f * cam[:, 0] / depth
        y = size / 2.0 - f * cam[:, 1] / depth
    return np.stack([x, y], axis=1), depth


def opengl_projection(fov_deg: float = FOV_DEG, near: float = 0.05, far: float = 10.0) -> np.ndarray:
    """OpenGL clip-space projection for a square image (for rasterisers)."""
    t = 1.0 / math.tan(math.radians(fov_deg) / 2.0)
    return np.array(
        [
            [t, 0.0, 0.0, 0.0],
            [0.0, t, 0.0, 0.0],
            [0.0, 0.0, (far + near) / (near - far), 2.0 * far * near / (near - far)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )


def blender_to_opencv_c2w(c2w: np.ndarray) -> np.ndarray:
    """Convert a Blender/OpenGL camera-to-world matrix to OpenCV's (x right, y down, z forward)."""
    return np.asarray(c2w) @ np.diag([1.0, -1.0, -1.0, 1.0])


def rotate_about_z(azimuth_deg: float) -> np.ndarray:
    """4x4 world rotation about +Z (used to put the first condition view at azimuth 0)."""
    a = math.radians(azimuth_deg)
    m = np.eye(4)
    m[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    return m
