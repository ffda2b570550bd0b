"""Depth carving: the refined density tells, per view, how deep each pixel's surface is; a node
that enough views see in front of their surface is empty space.

This generalises the voting visual hull from masks to depth: background pixels carve their
whole ray, foreground pixels carve up to the surface the volume rendering found. It turns the
refined density (fuzzy, and unobserved inside solids) into a clean solid: nodes behind every
view's surface stay filled, so a solid's interior is solid whatever density it ended with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .grid import Grid
from .views import ViewSet

#: Rays whose accumulated opacity stays below this have no surface to speak of: no depth vote.
MIN_OPACITY = 0.2


def depth_maps(views: ViewSet, grid: Grid, volume: torch.Tensor, box_lo, box_hi, samples: int,
               chunk: int = 65536, check_cancel=None) -> torch.Tensor:
    """(V, S, S) median termination depth along the view axis (inf where there is none)."""
    from .refine import _rays, _slab, density

    size = views.size
    depth = torch.full((views.count, size * size), float("inf"), device=views.device)
    ys, xs = torch.meshgrid(torch.arange(size, device=views.device), torch.arange(size, device=views.device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    for v in range(views.count):
        if check_cancel is not None:
            check_cancel()
        fg = torch.nonzero(views.alpha[v, 0].reshape(-1) >= 0.5)[:, 0]
        for start in range(0, fg.shape[0], chunk):
            idx = fg[start:start + chunk]
            origin, dirs = _rays(views, torch.full_like(idx, v), ys[idx], xs[idx])
            near, far = _slab(origin, dirs, box_lo, box_hi)
            hit = far > near
            far = torch.maximum(far, near + 1e-4)
            steps = (torch.arange(samples, device=views.device) + 0.5) / samples
            t = near[:, None] + (far - near)[:, None] * steps
            delta = ((far - near) / samples)[:, None]
            points = origin[:, None, :] + t[..., None] * dirs[:, None, :]
            sigma = density(volume, grid, points)
            opacity = 1.0 - torch.exp(-torch.cumsum(sigma * delta, dim=1))
            total = opacity[:, -1]
            # first sample where half of the ray's final opacity is reached
            first = torch.argmax((opacity >= 0.5 * total[:, None]).int(), dim=1)
            t_hit = t.gather(1, first[:, None])[:, 0]
            # distance along the ray -> depth along the view axis
            axis = -views.c2w[v, :3, 2]
            d = t_hit * (dirs @ axis)
            d = torch.where(hit & (total >= MIN_OPACITY), d, torch.full_like(d, float("inf")))
            depth[v, idx] = d
    return depth.view(views.count, size, size)


def carve_field(views: ViewSet, grid: Grid, depths: torch.Tensor, view_weights: torch.Tensor, tolerated_votes: int,
                check_cancel=None) -> torch.Tensor:
    """(R, R, R) field: > 0 for empty space, < 0 for solid; its zero set is the surface.

    Each view votes s in [-1, 1]: from its mask where the node projects on background, from
    (surface depth - node depth) in units of two node spacings where it projects on the
    object; outside the image it does not vote. The field is the (tolerated_votes + 1)-th
    largest vote, so that many views may wrongly call a node empty without carving it.
    """
    points = grid.node_points(views.device).reshape(-1, 3)
    highest = torch.full((tolerated_votes + 1, points.shape[0]), -1.0, device=views.device)
    scale = 2.0 * grid.spacing
    for v in range(views.count):
        if check_cancel is not None:
            check_cancel()
        if float(view_weights[v]) <= 0:
            continue
        pixels, depth = views.project(points, v)
        known = views.inside_image(pixels, depth)
        alpha = views.sample(views.alpha[v], pixels)[:, 0]
        mask_vote = ((0.5 - alpha) * 4.0).clamp(-1.0, 1.0)
        px = pixels.floor().long().clamp(0, views.size - 1)
        surface = depths[v, px[:, 1], px[:, 0]]
        depth_vote = torch.where(torch.isfinite(surface), ((surface - depth) / scale).clamp(-1.0, 1.0),
                                 torch.full_like(depth, -1.0))
        vote = torch.where(alpha < 0.5, mask_vote, torch.maximum(depth_vote, mask_vote))
        vote = torch.where(known, vote, torch.full_like(vote, -1.0))
        carry = vote
        for k in range(tolerated_votes + 1):
            larger = torch.maximum(highest[k], carry)
            carry = torch.minimum(highest[k], carry)
            highest[k] = larger
    return highest[tolerated_votes].reshape(grid.resolution, grid.resolution, grid.resolution)
