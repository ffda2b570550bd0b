"""Reconstruction: the 32 generated RGBA views -> a vertex-coloured mesh (see docs/reconstruction.md).

Importing this package is cheap (no torch); the work happens in the submodules, imported on use::

    from mvdpp.recon import reconstruct, reconstruct_folder
    mesh = reconstruct(images, cameras)          # trimesh.Trimesh, rig world frame, Z up
    reconstruct_folder("result/", "mesh.glb")    # reads a result folder, writes GLB/OBJ/PLY
"""

from __future__ import annotations

from .settings import PRESETS, QUALITIES, ReconSettings


def reconstruct(images, cameras, quality="auto", device="auto", progress=None, should_cancel=None,
                view_source="rendered", **overrides):
    """Mesh from RGBA views (uint8 (H, W, 4), alpha = mask) and their mvdpp.rig.Camera list.

    quality: "draft" | "standard" | "high" | "auto" (standard on CUDA, draft on the CPU; draft for
    view_source="generated" on both).
    view_source: "rendered" (exact renders) or "generated" (the model's views: a more tolerant
    visual hull, see docs/reconstruction.md).
    progress(stage, step, total) is called as stages advance; should_cancel() -> True makes
    the call raise mvdpp.errors.JobCancelled at the next check.
    """
    from .pipeline import reconstruct as _reconstruct

    return _reconstruct(images, cameras, quality=quality, device=device, progress=progress,
                        should_cancel=should_cancel, view_source=view_source, **overrides)


def reconstruct_folder(result_folder, out_path, quality="auto", device="auto", progress=None, should_cancel=None,
                       view_source="generated"):
    """Read a result folder's views and cameras, reconstruct, write ``out_path`` (.glb/.obj/.ply).
    A result folder holds the model's views, hence view_source "generated" by default."""
    from .export import reconstruct_folder as _reconstruct_folder

    return _reconstruct_folder(result_folder, out_path, quality=quality, device=device, progress=progress,
                               should_cancel=should_cancel, view_source=view_source)


__all__ = ["reconstruct", "reconstruct_folder", "PRESETS", "QUALITIES", "ReconSettings"]
