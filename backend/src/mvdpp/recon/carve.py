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
                solid: torch.Tensor | None = None, check_cancel=None, chunk: int = 1 << 17) -> torch.Tensor:
    """(R, R, R) field: > 0 for empty space, < 0 for solid; its zero set is the surface.

    With ``solid`` (bool (R, R, R)) only those nodes are evaluated; the others read as empty (1).
    Each view votes s in [-1, 1]: from its mask where the node projects on background, from
    (surface depth - node depth) in units of two node spacings where it projects on the
    object; outside the image it does not vote. The field is the (tolerated_votes + 1)-th
    largest vote, so that many views may wrongly call a node empty without carving it.
    """
    # Only nodes that are solid so far can be carved (the others are decided): evaluate those.
    selected = None if solid is None else torch.nonzero(solid.reshape(-1))[:, 0]
    points = grid.node_points(views.device).reshape(-1, 3)
    if selected is not None:
        points = points[selected]
    scale = 2.0 * grid.spacing
    silent = (view_weights <= 0)[:, None]
    result = []
    for start in range(0, points.shape[0], chunk):
        if check_cancel is not None:
            check_cancel()
        pixels, depth = views.project_all(points[start:start + chunk])
        known = views.inside_image(pixels, depth)
        alpha = views.sample_all(views.alpha, pixels)[:, 0]
        mask_vote = ((0.5 - alpha) * 4.0).clamp(-1.0, 1.0)
        px = (pixels * (depths.shape[-1] / views.size)).floor().long().clamp(0, depths.shape[-1] - 1)
        view_index = torch.arange(views.count, device=views.device)[:, None]
        surface = depths[view_index, px[..., 1], px[..., 0]]
        depth_vote = torch.where(torch.isfinite(surface), ((surface - depth) / scale).clamp(-1.0, 1.0),
                                 torch.full_like(depth, -1.0))
        vote = torch.where(alpha < 0.5, mask_vote, torch.maximum(depth_vote, mask_vote))
        vote = torch.where(known & ~silent, vote, torch.full_like(vote, -1.0))
        k = min(tolerated_votes + 1, vote.shape[0])
        result.append(torch.topk(vote, k, dim=0).values[-1])
    highest = torch.cat(result) if result else points.new_zeros(0)
    if selected is None:
        return highest.reshape(grid.resolution, grid.resolution, grid.resolution)
    out = torch.full((grid.resolution ** 3,), 1.0, device=views.device)
    out[selected] = highest
    return out.view(grid.resolution, grid.resolution, grid.resolution)
