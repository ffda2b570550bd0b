"""A visual hull that votes: a node is empty only when enough views see it as background.

Strict silhouette intersection lets one bad mask (a generated view with a missing part) cut a
hole straight through the object. Here each view casts a vote: "background" where its alpha is
below 0.5 at the node's projection, nothing where the node falls outside the image (the rig's
note: outside is unknown, not empty). The hull keeps every node with at most
``tolerated_votes`` background votes.

The returned field is smooth, for sub-voxel surfaces: the (tolerated_votes + 1)-th smallest
bilinear alpha over the views that see the node, so the 0.5 level set is the voting hull.
"""

from __future__ import annotations

import torch

from .grid import Grid
from .views import ViewSet


def hull_field(views: ViewSet, grid: Grid, tolerated_votes: int = 1, view_weights: torch.Tensor | None = None,
               check_cancel=None) -> torch.Tensor:
    """(R, R, R) field in [0, 1]; the hull is where it is >= 0.5. Views with weight 0 do not vote."""
    points = grid.node_points(views.device).reshape(-1, 3)
    # lowest[k] holds the (k+1)-th smallest alpha seen so far; unknown views leave it alone.
    lowest = torch.ones(tolerated_votes + 1, points.shape[0], device=views.device)
    for v in range(views.count):
        if check_cancel is not None:
            check_cancel()
        if view_weights is not None and float(view_weights[v]) <= 0:
            continue
        pixels, depth = views.project(points, v)
        alpha = views.sample(views.alpha[v], pixels)[:, 0]
        alpha = torch.where(views.inside_image(pixels, depth), alpha, torch.ones_like(alpha))
        # insert into the sorted list of the lowest values (a tiny insertion sort per node)
        carry = alpha
        for k in range(tolerated_votes + 1):
            smaller = torch.minimum(lowest[k], carry)
            carry = torch.maximum(lowest[k], carry)
            lowest[k] = smaller
    return lowest[tolerated_votes].reshape(grid.resolution, grid.resolution, grid.resolution)


def silhouette_agreement(views: ViewSet, grid: Grid, occupied: torch.Tensor) -> torch.Tensor:
    """Per view: IoU between its mask and the projection of the occupied nodes (V,).

    Used to find corrupted masks: a view that disagrees with the consensus hull much more than
    the others do is left out of the mask term of the refinement.
    """
    points = grid.node_points(views.device)[occupied]
    scores = torch.zeros(views.count, device=views.device)
    size = views.size
    for v in range(views.count):
        pixels, depth = views.project(points, v)
        keep = views.inside_image(pixels, depth)
        px = pixels[keep].long()
        covered = torch.zeros(size, size, dtype=torch.bool, device=views.device)
        covered[px[:, 1], px[:, 0]] = True
        # nodes are ~1 px apart at the rig's scale: close the pinholes between their projections
        covered = torch.nn.functional.max_pool2d(covered[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
        mask = views.alpha[v, 0] >= 0.5
        inter = (covered & mask).sum().float()
        union = (covered | mask).sum().float().clamp_min(1.0)
        scores[v] = inter / union
    return scores
