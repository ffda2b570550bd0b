"""Depth carving: a node that enough views see in front of their surface is empty space.

This generalises the voting visual hull from masks to depth maps: background pixels carve
their whole ray, foreground pixels carve up to the surface that stereo found (stereo.py).
Nodes behind every view's surface stay filled, so solids stay solid, and as in the hull a
node is carved only when more than ``tolerated_votes`` views agree.
"""

from __future__ import annotations

import torch

from .grid import Grid
from .views import ViewSet

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
        px = (pixels * (depths.shape[-1] / views.size)).floor().long().clamp(0, depths.shape[-1] - 1)
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
