"""Multi-view stereo inside the hull: per-view depth maps where photo-consistency says the
surface lies deeper than the visual hull (a cup's cavity, a bowl, a notch), for depth carving.

For each foreground pixel of each view, depth hypotheses are swept from where the ray enters
the hull to where it leaves it. Each hypothesis is projected into the nearest views; the
colour difference to the reference pixel, kept for the best half of those views (the others
may be occluded) and averaged over a small window, is its cost. A pixel's depth moves off the
hull only when a deeper hypothesis is clearly more consistent than the hull's surface: in
textureless regions, where stereo cannot decide, the hull stands.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .grid import Grid
from .rays import box_interval, pixel_rays
from .views import ViewSet

NEIGHBOURS = 6
KEEP_BEST = 3
WINDOW = 5
#: A deeper hypothesis must itself be a good match (mean colour difference below this).
MAX_MATCH_COST = 0.1
#: Stereo works on images at most this size (larger views are averaged down: cost).
MAX_SIZE = 256


def _neighbours(views: ViewSet, count: int) -> torch.Tensor:
    axes = -views.c2w[:, :3, 2]
    similarity = axes @ axes.T
    similarity.fill_diagonal_(-2.0)
    return similarity.topk(min(count, views.count - 1), dim=1).indices


def _sample(image: torch.Tensor, pixels: torch.Tensor, size: int) -> torch.Tensor:
    grid = (pixels / size * 2.0 - 1.0).view(1, 1, -1, 2)
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0]


def stereo_depths(views: ViewSet, grid: Grid, hull: torch.Tensor, view_weights: torch.Tensor, *,
                  hypotheses: int, near_hull_nodes: float, min_gain: float, check_cancel=None) -> tuple[torch.Tensor, int]:
    """(V, S', S') depth maps along each view's axis and S'; inf where stereo found no surface
    clearly deeper than the hull's. ``hypotheses`` depths per ray; a hypothesis within
    ``near_hull_nodes`` grid nodes of the hull's entry counts as the hull's surface; a deeper one
    must beat it by ``min_gain`` in mean colour difference (mvdpp.recon.settings.ReconSettings)."""
    device = views.device
    factor = max(1, views.size // MAX_SIZE)
    size = views.size // factor
    rgb = F.avg_pool2d(views.rgb, factor) if factor > 1 else views.rgb
    alpha = F.avg_pool2d(views.alpha, factor) if factor > 1 else views.alpha
    hull_volume = hull[None, None].float()
    inside = hull >= 0.5
    nodes = grid.node_points(device)[inside]
    box_lo, box_hi = nodes.amin(0) - grid.spacing, nodes.amax(0) + grid.spacing
    neighbours = _neighbours(views, NEIGHBOURS)
    march = max(64, 2 * grid.resolution)
    ys, xs = torch.meshgrid(torch.arange(size, device=device), torch.arange(size, device=device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    depths = torch.full((views.count, size * size), float("inf"), device=device)
    for v in range(views.count):
        if check_cancel is not None:
            check_cancel()
        fg = torch.nonzero(alpha[v, 0].reshape(-1) >= 0.5)[:, 0]
        if fg.numel() == 0:
            continue
        # rays through the centres of the small image's pixels (views' focal scaled by 1/factor)
        origin, dirs = pixel_rays(views, torch.full_like(fg, v), ys[fg] * factor + (factor - 1) / 2.0,
                             xs[fg] * factor + (factor - 1) / 2.0)
        near, far = box_interval(origin, dirs, box_lo, box_hi)
        far = torch.maximum(far, near + 1e-4)
        steps = (torch.arange(march, device=device) + 0.5) / march
        t = near[:, None] + (far - near)[:, None] * steps
        points = origin[:, None, :] + t[..., None] * dirs[:, None, :]
        occ = F.grid_sample(hull_volume, grid.normalised(points).view(1, 1, 1, -1, 3), mode="bilinear",
                            padding_mode="zeros", align_corners=True).view(points.shape[:2]) >= 0.5
        has = occ.any(1)
        first = torch.argmax(occ.int(), 1)
        last = march - 1 - torch.argmax(occ.flip(1).int(), 1)
        t_in = t.gather(1, first[:, None])[:, 0]
        t_out = t.gather(1, last[:, None])[:, 0]
        hyp = t_in[:, None] + (t_out - t_in).clamp_min(0)[:, None] * torch.linspace(0, 1, hypotheses, device=device)
        pts = origin[:, None, :] + hyp[..., None] * dirs[:, None, :]           # (P, K, 3)
        ref = rgb[v][:, ys[fg], xs[fg]].T                                      # (P, 3)
        costs = []
        for n in neighbours[v].tolist():
            if float(view_weights[n]) <= 0:
                continue
            pix, dep = views.project(pts.reshape(-1, 3), n)
            pix = pix / factor
            ok = views.inside_image(pix * factor, dep)
            sample = _sample(torch.cat([rgb[n], alpha[n]]), pix, size).T.view(fg.shape[0], hypotheses, 4)
            diff = (sample[..., :3] - ref[:, None, :]).abs().mean(-1)
            diff = torch.where(sample[..., 3] >= 0.5, diff, torch.ones_like(diff))  # lands on background: wrong
            diff = torch.where(ok.view(fg.shape[0], hypotheses), diff, torch.full_like(diff, 0.5))
            costs.append(diff)
        if len(costs) < 2:
            continue
        cost = torch.stack(costs).sort(0).values[: min(KEEP_BEST, len(costs))].mean(0)  # (P, K)
        # aggregate over a window of the image: single pixels are too noisy to match
        volume = torch.zeros(hypotheses, size * size, device=device)
        count = torch.zeros(1, size * size, device=device)
        volume[:, fg] = cost.T
        count[:, fg] = 1.0
        pad = WINDOW // 2
        volume = F.avg_pool2d(volume.view(1, hypotheses, size, size), WINDOW, 1, pad, count_include_pad=True)
        count = F.avg_pool2d(count.view(1, 1, size, size), WINDOW, 1, pad, count_include_pad=True)
        cost = (volume / count.clamp_min(1e-6)).view(hypotheses, -1)[:, fg].T
        # The hull's surface is only as exact as the masks: any hypothesis within a few nodes of
        # the entry counts as "the hull is right there".
        near_hull = hyp <= t_in[:, None] + near_hull_nodes * grid.spacing
        hull_cost = torch.where(near_hull, cost, torch.full_like(cost, float("inf"))).amin(1)
        deeper_cost = torch.where(near_hull, torch.full_like(cost, float("inf")), cost)
        best = deeper_cost.argmin(1)
        best_cost = deeper_cost.gather(1, best[:, None])[:, 0]
        believe = (hull_cost - best_cost > min_gain) & (best_cost < MAX_MATCH_COST)
        axis = -views.c2w[v, :3, 2]
        depth = hyp.gather(1, best[:, None])[:, 0] * (dirs @ axis)
        # Only believed deeper surfaces are kept: elsewhere the masks (the hull) decide, which is
        # more exact than any depth this sweep could give at the hull's own surface.
        depths[v, fg] = torch.where(has & believe, depth, torch.full_like(depth, float("inf")))
    return depths.view(views.count, size, size), size
