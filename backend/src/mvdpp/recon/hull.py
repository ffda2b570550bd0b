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

import math

import torch
import torch.nn.functional as F

from .grid import Grid
from .views import ViewSet


def _lowest_alpha(views: ViewSet, points: torch.Tensor, tolerated_votes: int, view_weights, check_cancel,
                  alphas=None, unknown_value: float = 1.0, margin_px: float = 0.0, chunk: int = 1 << 17) -> torch.Tensor:
    """The (tolerated_votes + 1)-th smallest alpha over the views that see each point (N,).

    Outside an image (or within ``margin_px`` of its border) a view reads ``unknown_value``;
    views of weight 0 read 1 (no vote)."""
    alphas = views.alpha if alphas is None else alphas
    silent = None if view_weights is None else (view_weights <= 0)[:, None]
    out = []
    for start in range(0, points.shape[0], chunk):
        if check_cancel is not None:
            check_cancel()
        pixels, depth = views.project_all(points[start:start + chunk])
        alpha = views.sample_all(alphas, pixels)[:, 0]
        # margin_px = 0: the hull itself, outside an image is "no vote" (1); margin_px > 0: a lower
        # bound over a cell, whose points may fall inside the image where the centre does not.
        known = (depth > 0) & (pixels >= margin_px).all(-1) & (pixels < views.size - margin_px).all(-1)
        fill = unknown_value if margin_px > 0 else 1.0
        alpha = torch.where(known, alpha, torch.full_like(alpha, fill))
        if silent is not None:
            alpha = torch.where(silent, torch.ones_like(alpha), alpha)
        k = min(tolerated_votes + 1, alpha.shape[0])
        out.append(torch.topk(alpha, k, dim=0, largest=False).values[-1])
    return torch.cat(out) if out else points.new_zeros(0)


def _box_max(images: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over a (2r+1)^2 window, as two 1-D passes (a square window costs r times more)."""
    w = 2 * radius + 1
    rows = F.max_pool2d(images, (1, w), stride=1, padding=(0, radius))
    return F.max_pool2d(rows, (w, 1), stride=1, padding=(radius, 0))


def hull_field(views: ViewSet, grid: Grid, tolerated_votes: int = 1, view_weights: torch.Tensor | None = None,
               check_cancel=None, top_cell: int = 16) -> torch.Tensor:
    """(R, R, R) field in [0, 1]; the hull is where it is >= 0.5. Views with weight 0 do not vote.

    Evaluated coarse to fine (an octree): for a cell, masks dilated (eroded) by the cell's
    footprint in each view bound the field from above (below) over the whole cell, so a cell is
    empty, full, or crossed by the surface; only crossed cells are split, and only nodes of
    crossed one-node cells are evaluated exactly. Thin parts (wires) survive: a dilated mask
    keeps every cell they touch. Needs (R - 1) divisible by ``top_cell`` (else: dense).
    """
    R = grid.resolution
    device = views.device
    if (R - 1) % top_cell != 0 or R <= 2 * top_cell:
        points = grid.node_points(device).reshape(-1, 3)
        return _lowest_alpha(views, points, tolerated_votes, view_weights, check_cancel).reshape(R, R, R)
    focal = float(views.focal.max())
    field = torch.zeros(R, R, R, device=device)
    n = (R - 1) // top_cell
    ii = torch.arange(n, device=device) * top_cell
    corners = torch.stack(torch.meshgrid(ii, ii, ii, indexing="ij"), -1).reshape(-1, 3)
    offsets = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], device=device)
    size = top_cell
    while size >= 1 and corners.shape[0] > 0:
        centres = grid.lo + (corners.float() + size / 2.0) * grid.spacing
        half_diagonal = (3 ** 0.5 / 2) * size * grid.spacing
        nearest_depth = float(views.project_all(centres)[1].min()) - half_diagonal
        nearest_depth = max(nearest_depth, 0.1)
        # a cell's points project within this many pixels of its centre's projection (+1: bilinear)
        radius = int(math.ceil(focal * half_diagonal / nearest_depth)) + 1
        upper = _lowest_alpha(views, centres, tolerated_votes, view_weights, check_cancel, _box_max(views.alpha, radius))
        lower = _lowest_alpha(views, centres, tolerated_votes, view_weights, check_cancel, -_box_max(-views.alpha, radius),
                              unknown_value=0.0, margin_px=radius)
        full = corners[lower >= 0.5]
        for offset in torch.nonzero(torch.ones(size + 1, size + 1, size + 1, device=device)):
            idx = full + offset
            field[idx[:, 0], idx[:, 1], idx[:, 2]] = 1.0
        crossed = corners[(upper >= 0.5) & (lower < 0.5)]
        if size == 1:
            # unique over flat indices: torch.unique(dim=0) sorts rows and took 24 s on a 2-core CPU at 257^3
            nodes = (crossed[:, None, :] + offsets[None]).reshape(-1, 3)
            flat = torch.unique((nodes[:, 0] * R + nodes[:, 1]) * R + nodes[:, 2])
            nodes = torch.stack([flat // (R * R), (flat // R) % R, flat % R], dim=1)
            points = grid.lo + nodes.float() * grid.spacing
            field[nodes[:, 0], nodes[:, 1], nodes[:, 2]] = _lowest_alpha(views, points, tolerated_votes, view_weights,
                                                                          check_cancel)
            break
        size //= 2
        corners = (crossed[:, None, :] + offsets[None] * size).reshape(-1, 3)
    return field


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
