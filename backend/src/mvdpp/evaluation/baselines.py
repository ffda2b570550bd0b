"""Meshes from views: the model's views, and the two baselines of every evaluation run.

* upper bound: the reconstruction from the 32 ground-truth rig views (what a perfect model gives);
* inputs only: the reconstruction from the input views and their true cameras alone (what you
  get without the diffusion model); with fewer than 4 inputs, which the reconstruction does not
  accept, the intersection of their silhouette cones (mvdpp.evaluation.silhouette_hull).

A reconstruction that finds no object (empty masks, as a random model produces) is a failure
recorded in the report, not an error that stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MVDPPError, OUT_OF_MEMORY


@dataclass
class MeshSettings:
    quality: str = "auto"  # mvdpp.recon quality: auto | draft | standard | high
    device: str = "auto"
    #: overrides of single reconstruction settings (e.g. grid_resolution=32 in tests)
    overrides: dict = field(default_factory=dict)


@dataclass
class MeshAttempt:
    mesh: object | None  # trimesh.Trimesh in the rig's Z-up frame, or None
    error: str | None
    seconds: float


def reconstruct_views(images, cameras, settings: MeshSettings, view_source: str = "rendered") -> MeshAttempt:
    """reconstruct() on any list of RGBA views + cameras; a failure is returned, not raised.
    view_source: "generated" for the model's views (mvdpp.recon.settings.VIEW_SOURCES)."""
    import time

    from ..recon import reconstruct

    import numpy as np

    started = time.perf_counter()
    images = list(images)
    if max(float((np.asarray(image)[..., 3] > 127).mean()) for image in images) < 1e-3:
        return MeshAttempt(None, "the views show no object (empty masks)", time.perf_counter() - started)
    try:
        mesh = reconstruct(images, list(cameras), quality=settings.quality, device=settings.device,
                           view_source=view_source, **settings.overrides)
    except MVDPPError as exc:
        if exc.code == OUT_OF_MEMORY:
            raise
        return MeshAttempt(None, exc.message, time.perf_counter() - started)
    except (IndexError, ValueError, RuntimeError) as exc:
        # Masks that agree on no voxel (a random or poor model) can make a reconstruction stage
        # fail on an empty hull; that is a failed mesh of this run, not of the evaluation.
        if "out of memory" in str(exc).lower():
            raise
        return MeshAttempt(None, f"reconstruction failed: {type(exc).__name__}: {exc}".splitlines()[0],
                           time.perf_counter() - started)
    if mesh is None or len(mesh.faces) == 0:
        return MeshAttempt(None, "empty mesh", time.perf_counter() - started)
    return MeshAttempt(mesh, None, time.perf_counter() - started)


def upper_bound(obj, settings: MeshSettings) -> MeshAttempt:
    """The mesh from the 32 ground-truth rig views."""
    return reconstruct_views(obj.views(), obj.view_cameras, settings)


#: The reconstruction needs this many views (mvdpp.recon.views); below it the baseline is the
#: silhouette hull of the inputs (mvdpp.evaluation.silhouette_hull).
RECONSTRUCTION_MIN_VIEWS = 4
SILHOUETTE_MAX_GRID = 161


def inputs_only(obj, num_inputs: int, settings: MeshSettings) -> MeshAttempt:
    """The mesh from the first ``num_inputs`` input views and their cameras, no diffusion model."""
    images, cameras = obj.inputs(num_inputs), obj.input_cameras[:num_inputs]
    if num_inputs >= RECONSTRUCTION_MIN_VIEWS:
        return reconstruct_views(images, cameras, settings)
    return silhouette_baseline(images, cameras, settings)


def silhouette_baseline(images, cameras, settings: MeshSettings) -> MeshAttempt:
    import time

    from ..recon.settings import resolve_quality
    from .silhouette_hull import silhouette_hull

    started = time.perf_counter()
    device_type = "cuda" if settings.device == "cuda" else "cpu"
    recon = resolve_quality(settings.quality, device_type).with_overrides(**settings.overrides)
    try:
        # A silhouette cone has no fine detail to resolve and this runs on the CPU in the main
        # process: a grid finer than the 128^3 IoU grid would only cost time.
        resolution = min(recon.grid_resolution, SILHOUETTE_MAX_GRID)
        mesh = silhouette_hull(images, cameras, resolution, recon.box_half_size, recon.smoothing_iterations)
    except MVDPPError as exc:  # no voxel left: the masks are empty
        return MeshAttempt(None, exc.message, time.perf_counter() - started)
    return MeshAttempt(mesh, None, time.perf_counter() - started)
