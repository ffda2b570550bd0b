"""Refinement: a density + colour grid fitted to the views by differentiable volume rendering.

The visual hull is right about silhouettes and blind to concavities (a cup's cavity is inside
every silhouette). Starting from the hull, a grid of density and colour is optimised so that
volume-rendered rays reproduce every view's RGB (over white) and mask; the photometric term is
what carves the parts that no silhouette can see. Density is confined to the (slightly dilated)
hull, which also keeps the ray samples few. Corrupted views (weight 0) take no part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .grid import Grid
from .settings import ReconSettings
from .views import ViewSet

#: Loss weights; chosen on the analytic test scenes and the procedural objects (docs/reconstruction.md).
MASK_WEIGHT = 1.0
TV_WEIGHT = 1e-3
LEARNING_RATE = 0.2
#: Initial density logit inside the hull: half-transparent voxels, so the early gradients reach
#: past the hull's surface to what lies behind it.
INITIAL_DENSITY_LOGIT = -2.0


@dataclass
class Refined:
    volume: torch.Tensor      # (1, 5, R, R, R): density logit, 3 colour logits, hull constraint
    box_lo: torch.Tensor      # (3,) the box that holds every density (the dilated hull's bounds)
    box_hi: torch.Tensor
    colour_at: callable       # world points (N, 3) -> colours (N, 3) in [0, 1]


def _sample(volume: torch.Tensor, grid: Grid, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of a (1, C, R, R, R) volume at points (..., 3) -> (C, ...)."""
    flat = grid.normalised(points).reshape(1, 1, 1, -1, 3)
    out = F.grid_sample(volume, flat, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(volume.shape[1], *points.shape[:-1])


def density(volume: torch.Tensor, grid: Grid, points: torch.Tensor) -> torch.Tensor:
    """Density per unit length at points (..., 3), zero outside the hull."""
    values = _sample(volume[:, [0, 4]], grid, points)
    return F.softplus(values[0]) * values[1].clamp(0, 1) / grid.spacing


def _ray_bank(views: ViewSet, box_lo: torch.Tensor, box_hi: torch.Tensor):
    """Pixels (view, y, x) whose rays cross the box, with their near/far distances."""
    size = views.size
    ys, xs = torch.meshgrid(torch.arange(size, device=views.device), torch.arange(size, device=views.device), indexing="ij")
    bank = []
    for v in range(views.count):
        origin, dirs = _rays(views, torch.full((size * size,), v, device=views.device), ys.reshape(-1), xs.reshape(-1))
        near, far = _slab(origin, dirs, box_lo, box_hi)
        hit = far > near
        bank.append(torch.stack([torch.full_like(ys.reshape(-1)[hit], v), ys.reshape(-1)[hit], xs.reshape(-1)[hit]], 1))
    return torch.cat(bank)


def _rays(views: ViewSet, view: torch.Tensor, y: torch.Tensor, x: torch.Tensor):
    f = views.focal[view]
    half = views.size / 2.0
    d_cam = torch.stack([(x.float() + 0.5 - half) / f, -(y.float() + 0.5 - half) / f, -torch.ones_like(f)], -1)
    rot = views.c2w[view, :3, :3]
    dirs = torch.einsum("nij,nj->ni", rot, d_cam)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return views.c2w[view, :3, 3], dirs


def _slab(origin, dirs, lo, hi):
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (lo - origin) * inv
    t1 = (hi - origin) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def _tv(volume: torch.Tensor) -> torch.Tensor:
    return ((volume[1:] - volume[:-1]) ** 2).mean() + ((volume[:, 1:] - volume[:, :-1]) ** 2).mean() + \
        ((volume[:, :, 1:] - volume[:, :, :-1]) ** 2).mean()


def refine(views: ViewSet, grid: Grid, hull: torch.Tensor, view_weights: torch.Tensor, settings: ReconSettings,
           progress=None, check_cancel=None, seed: int = 0) -> Refined:
    device = views.device
    generator = torch.Generator(device=device).manual_seed(seed)
    inside = (hull >= 0.5).float()
    # One voxel of slack: the hull's surface is only as exact as the masks' edges.
    allowed = F.max_pool3d(inside[None, None], 3, stride=1, padding=1)[0, 0]
    occupied_nodes = grid.node_points(device)[allowed > 0]
    box_lo = occupied_nodes.amin(0) - grid.spacing
    box_hi = occupied_nodes.amax(0) + grid.spacing

    density = torch.where(inside > 0, torch.full_like(inside, INITIAL_DENSITY_LOGIT), torch.full_like(inside, -6.0))
    colour = torch.zeros(3, *inside.shape, device=device)
    params = torch.cat([density[None], colour, allowed[None]])[None].contiguous().requires_grad_(True)
    optimiser = torch.optim.Adam([params], lr=LEARNING_RATE, betas=(0.9, 0.99))

    bank = _ray_bank(views, box_lo, box_hi)
    ray_weight = view_weights[bank[:, 0]]
    bank = bank[ray_weight > 0]
    target_rgb = views.rgb[bank[:, 0], :, bank[:, 1], bank[:, 2]]
    target_alpha = views.alpha[bank[:, 0], 0, bank[:, 1], bank[:, 2]]

    iterations = settings.refine_iterations
    n_samples = settings.samples_per_ray
    inv_spacing = 1.0 / grid.spacing
    for step in range(iterations):
        if check_cancel is not None and step % 10 == 0:
            check_cancel()
        lr = LEARNING_RATE * (0.1 ** (step / max(1, iterations)))
        for group in optimiser.param_groups:
            group["lr"] = lr
        pick = torch.randint(0, bank.shape[0], (settings.rays_per_batch,), device=device, generator=generator)
        rays = bank[pick]
        origin, dirs = _rays(views, rays[:, 0], rays[:, 1], rays[:, 2])
        near, far = _slab(origin, dirs, box_lo, box_hi)
        far = torch.maximum(far, near + 1e-4)
        jitter = torch.rand(rays.shape[0], n_samples, device=device, generator=generator)
        steps = (torch.arange(n_samples, device=device) + jitter) / n_samples
        t = near[:, None] + (far - near)[:, None] * steps
        delta = ((far - near) / n_samples)[:, None]
        points = origin[:, None, :] + t[..., None] * dirs[:, None, :]
        values = _sample(params, grid, points)  # (5, B, N)
        sigma = F.softplus(values[0]) * values[4].clamp(0, 1) * inv_spacing
        alpha = 1.0 - torch.exp(-sigma * delta)
        transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-7], 1), 1)
        weights = alpha * transmittance
        acc = weights.sum(1)
        rgb = (weights[..., None] * torch.sigmoid(values[1:4]).permute(1, 2, 0)).sum(1) + (1.0 - acc)[:, None]
        loss = F.mse_loss(rgb, target_rgb[pick]) + MASK_WEIGHT * F.mse_loss(acc, target_alpha[pick])
        if TV_WEIGHT > 0:
            loss = loss + TV_WEIGHT * _tv(params[0, 0])
        optimiser.zero_grad(set_to_none=False)
        loss.backward()
        params.grad[0, 4] = 0.0  # the hull channel is a constraint, not a parameter
        optimiser.step()
        if progress is not None and (step % 25 == 0 or step == iterations - 1):
            progress("refine", step + 1, iterations)

    volume = params.detach()
    colour_grid = volume[:, 1:4]

    def colour_at(points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            sampled = F.grid_sample(colour_grid, grid.normalised(points).view(1, 1, 1, -1, 3),
                                    mode="bilinear", padding_mode="border", align_corners=True)
            return torch.sigmoid(sampled[0, :, 0, 0].T)

    return Refined(volume=volume, box_lo=box_lo, box_hi=box_hi, colour_at=colour_at)
