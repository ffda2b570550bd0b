"""Camera rays of pixels and their intersection with an axis-aligned box (torch)."""

from __future__ import annotations

import torch

from .views import ViewSet


def pixel_rays(views: ViewSet, view: torch.Tensor, y: torch.Tensor, x: torch.Tensor):
    """Origins (N, 3) and unit directions (N, 3) of rays through pixel centres (x, y) of ``view``."""
    f = views.focal[view]
    half = views.size / 2.0
    d_cam = torch.stack([(x.float() + 0.5 - half) / f, -(y.float() + 0.5 - half) / f, -torch.ones_like(f)], -1)
    dirs = torch.einsum("nij,nj->ni", views.c2w[view, :3, :3], d_cam)
    return views.c2w[view, :3, 3], dirs / dirs.norm(dim=-1, keepdim=True)


def box_interval(origin, dirs, lo, hi):
    """Entry and exit distances of rays through the box [lo, hi] (exit < entry: a miss)."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (lo - origin) * inv
    t1 = (hi - origin) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far
