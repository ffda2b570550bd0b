"""reconstruct(): 32 RGBA views -> a vertex-coloured mesh in the rig's world frame.

Stages: voting visual hull -> multi-view stereo inside the hull and depth carving (concavities)
-> marching cubes -> vertex colours from the views with a depth test.
"""

from __future__ import annotations

import time

import torch
import trimesh

from ..errors import DEVICE, INCONSISTENT_VIEWS, JobCancelled, MVDPPError
from .colour import vertex_colours
from .grid import Grid
from .carve import carve_field
from .hull import hull_field, silhouette_agreement
from .mesh import extract_mesh
from .refine import refine_along_normals
from .settings import resolve_quality
from .stereo import stereo_depths
from .views import as_view_set

#: A view whose mask agrees with the consensus hull this much worse than the median view is
#: treated as corrupted: it votes in the hull no longer and its mask term is switched off.
OUTLIER_IOU_DROP = 0.15


def resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MVDPPError(DEVICE, f"unknown device {device!r}", "use auto, cpu or cuda") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MVDPPError(DEVICE, "CUDA was requested but no CUDA GPU is available",
                         "use --device auto or cpu (the CPU uses a coarser grid)")
    return resolved


def reconstruct(images, cameras, quality="auto", device="auto", progress=None, should_cancel=None,
                timings: dict | None = None, view_source: str = "rendered", **overrides) -> trimesh.Trimesh:
    """See docs/architecture.md. ``view_source`` "generated" (the model's views) tolerates more
    disagreeing views than "rendered" (mvdpp.recon.settings.GENERATED_VIEW_OVERRIDES);
    ``overrides`` replace single fields of the resulting preset (e.g. grid_resolution=48 in
    tests); ``timings`` (a dict) receives seconds per stage."""
    device = resolve_device(device)
    settings = resolve_quality(quality, device.type, view_source).with_overrides(**overrides)
    timings = {} if timings is None else timings
    report = progress if progress is not None else (lambda stage, step, total: None)

    def check_cancel() -> None:
        if should_cancel is not None and should_cancel():
            raise JobCancelled("The reconstruction was cancelled.")

    start = time.perf_counter()
    views = as_view_set(images, cameras, device)
    grid = Grid(settings.grid_resolution, settings.box_half_size)

    report("hull", 0, 1)
    field = hull_field(views, grid, settings.hull_tolerated_votes, check_cancel=check_cancel)
    view_weights = _mask_trust(views, grid, field)
    if bool((view_weights == 0).any()):
        # Recompute without the corrupted views: the vote tolerance is then free for the others.
        field = hull_field(views, grid, settings.hull_tolerated_votes, view_weights=view_weights, check_cancel=check_cancel)
    report("hull", 1, 1)
    timings["hull_s"] = time.perf_counter() - start
    if not bool((field >= 0.5).any()):
        raise inconsistent_views_error()

    level = 0.5
    if settings.stereo:
        t0 = time.perf_counter()
        report("stereo", 0, 1)
        depths, _ = stereo_depths(views, grid, field, view_weights, hypotheses=settings.stereo_hypotheses,
                                  near_hull_nodes=settings.stereo_near_hull_nodes, min_gain=settings.stereo_min_gain,
                                  check_cancel=check_cancel)
        # carve_field is > 0 in empty space; marching cubes wants inside above the level
        carved = carve_field(views, grid, depths, view_weights, settings.hull_tolerated_votes + settings.carve_extra_votes,
                             solid=field >= 0.5, check_cancel=check_cancel)
        # inside = hull AND not carved; both as signed fields with the surface at 0
        field = torch.minimum(field - 0.5, -0.5 * carved)
        level = 0.0
        report("stereo", 1, 1)
        timings["stereo_s"] = time.perf_counter() - t0

    check_cancel()
    t0 = time.perf_counter()
    report("mesh", 0, 1)
    mesh = extract_mesh(field.float().cpu().numpy(), grid, level, settings.smoothing_iterations, settings.drop_hollows)
    if settings.refine_vertices:
        refine_along_normals(mesh, views, grid.spacing, inward_nodes=settings.refine_inward_nodes,
                             outward_nodes=settings.refine_outward_nodes, steps=settings.refine_steps,
                             smoothing=settings.refine_smoothing, window_rings=settings.refine_window_rings,
                             solid_at=_solid_sampler(field, grid, level), anchor_thickness_nodes=settings.refine_anchor_thickness_nodes,
                             view_weights=view_weights, check_cancel=check_cancel)
    timings["mesh_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report("colour", 0, 1)
    mesh.visual.vertex_colors = vertex_colours(mesh, views, grid.spacing, check_cancel=check_cancel)
    report("colour", 1, 1)
    timings["colour_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - start
    return mesh


def _solid_sampler(field: torch.Tensor, grid: Grid, level: float):
    """(M, 3) world points (any device) -> (M,) bool: inside the solid that ``field`` > ``level`` holds."""
    volume = field.float()[None, None]

    def solid_at(points: torch.Tensor) -> torch.Tensor:
        where = grid.normalised(points.to(volume.device)).view(1, 1, 1, -1, 3)
        values = torch.nn.functional.grid_sample(volume, where, mode="bilinear", padding_mode="border", align_corners=True)
        return values.view(-1) > level

    return solid_at


def inconsistent_views_error() -> MVDPPError:
    return MVDPPError(INCONSISTENT_VIEWS, "The views do not agree on any solid: no point in space lies inside enough of their masks.",
                      "The views are not consistent with each other (a weak or untrained checkpoint does this); "
                      "try another seed, more steps or more reference images, or a better checkpoint.")


def _mask_trust(views, grid: Grid, field: torch.Tensor) -> torch.Tensor:
    """1 for views whose mask agrees with the consensus hull, 0 for outliers (corrupted masks)."""
    agreement = silhouette_agreement(views, grid, field >= 0.5)
    median = agreement.median()
    return (agreement >= median - OUTLIER_IOU_DROP).float()
