"""Analytic test scenes for the reconstruction tests: a tiny numpy sphere tracer.

Shapes are signed distance functions in the rig's world frame; each is rendered at the 32 rig
cameras as RGBA (RGB over white, alpha = coverage, 2x2 supersampled) with a 3D checker texture
and a fixed world light, so the photometric term has something to lock on to.
"""

from __future__ import annotations

import numpy as np
import trimesh

from mvdpp import rig

LIGHT = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])


def sphere_sdf(radius=0.4, centre=(0.0, 0.0, 0.0)):
    centre = np.asarray(centre)
    return lambda p: np.linalg.norm(p - centre, axis=-1) - radius


def box_sdf(half=(0.35, 0.25, 0.3)):
    half = np.asarray(half)

    def sdf(p):
        q = np.abs(p) - half
        return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)

    return sdf


def _cylinder(p, radius, z_low, z_high):
    dx = np.linalg.norm(p[..., :2], axis=-1) - radius
    dz = np.abs(p[..., 2] - 0.5 * (z_low + z_high)) - 0.5 * (z_high - z_low)
    d = np.stack([dx, dz], axis=-1)
    return np.minimum(d.max(axis=-1), 0.0) + np.linalg.norm(np.maximum(d, 0.0), axis=-1)


CUP = dict(radius=0.4, inner_radius=0.3, z_low=-0.4, z_high=0.4, bottom=0.12)


def cup_sdf():
    c = CUP

    def sdf(p):
        outer = _cylinder(p, c["radius"], c["z_low"], c["z_high"])
        cavity = _cylinder(p, c["inner_radius"], c["z_low"] + c["bottom"], c["z_high"] + 1.0)
        return np.maximum(outer, -cavity)

    return sdf


def _normals(sdf, p, eps=1e-4):
    grads = []
    for axis in range(3):
        offset = np.zeros(3)
        offset[axis] = eps
        grads.append(sdf(p + offset) - sdf(p - offset))
    n = np.stack(grads, axis=-1)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _albedo(p):
    checker = (np.floor(p[..., 0] / 0.12) + np.floor(p[..., 1] / 0.12) + np.floor(p[..., 2] / 0.12)) % 2
    base = np.stack([0.85 - 0.5 * (p[..., 2] + 0.5), 0.35 + 0.5 * (p[..., 0] + 0.5), 0.3 + 0.5 * (p[..., 1] + 0.5)], -1)
    return np.clip(base * (0.55 + 0.45 * checker[..., None]), 0.0, 1.0)


def render(sdf, cameras=None, size=64, supersample=2):
    """uint8 (N, size, size, 4) RGBA views of the SDF's zero set."""
    cameras = rig.rig_cameras() if cameras is None else cameras
    hi = size * supersample
    out = []
    for camera in cameras:
        f = camera.focal_px(hi)
        ys, xs = np.mgrid[0:hi, 0:hi] + 0.5
        dirs_cam = np.stack([(xs - hi / 2) / f, -(ys - hi / 2) / f, -np.ones_like(xs)], -1).reshape(-1, 3)
        dirs = dirs_cam @ camera.c2w[:3, :3].T
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        origin = camera.c2w[:3, 3]
        t = np.full(dirs.shape[0], 0.3)
        hit = np.zeros(dirs.shape[0], bool)
        active = np.arange(dirs.shape[0])
        for _ in range(96):  # march only the rays still in flight
            d = sdf(origin + t[active, None] * dirs[active])
            done = d < 1e-4
            hit[active[done]] = True
            t[active[~done]] += d[~done]
            active = active[~done & (t[active] < 3.0)]
            if active.size == 0:
                break
        p = origin + t[:, None] * dirs
        n = _normals(sdf, p)
        shade = 0.45 + 0.55 * np.clip(n @ LIGHT, 0.0, 1.0)
        rgb = np.where(hit[:, None], _albedo(p) * shade[:, None], 1.0)
        rgba = np.concatenate([rgb, hit[:, None].astype(float)], -1).reshape(size, supersample, size, supersample, 4)
        out.append((rgba.mean(axis=(1, 3)) * 255 + 0.5).astype(np.uint8))
    return np.stack(out)


def sphere_mesh(radius=0.4):
    return trimesh.creation.icosphere(subdivisions=5, radius=radius)


def box_mesh(half=(0.35, 0.25, 0.3)):
    return trimesh.creation.box(extents=2 * np.asarray(half))


def cup_mesh():
    """The cup as a watertight mesh (outer cylinder minus the cavity), by marching cubes of its SDF."""
    import mcubes

    n = 161
    axis = np.linspace(-0.5, 0.5, n)
    p = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    field = cup_sdf()(p)
    v, f = mcubes.marching_cubes(np.pad(-field, 1, constant_values=-1.0), 0.0)
    return trimesh.Trimesh(-0.5 + (v - 1) * (1.0 / (n - 1)), f)
