"""Scores of one run: generated views against the ground-truth views, meshes against the truth.

Views are scored as the paper scores them: RGB on a white background at 256 x 256 (both images
resized there when their size differs), PSNR and SSIM averaged over the 32 views, LPIPS when the
``lpips`` package and its weights are installed. Meshes: Chamfer distance, F-score and volume IoU
(mvdpp.metrics) against the ground-truth solid; the ground truth's samples and occupancy are
computed once per object (MeshReference) and shared by every mesh scored against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import metrics

SCORE_SIZE = 256


def on_white(image: np.ndarray, size: int = SCORE_SIZE) -> np.ndarray:
    """uint8 RGB on white at ``size`` px. Project images store RGB already composited over white
    (alpha = mask); pixels the mask calls empty are forced to white, as the pipeline does."""
    from PIL import Image

    image = np.asarray(image)
    rgb = image[..., :3].copy()
    if image.shape[-1] == 4:
        rgb[image[..., 3] == 0] = 255
    if rgb.shape[0] != size or rgb.shape[1] != size:
        rgb = np.asarray(Image.fromarray(rgb, "RGB").resize((size, size), Image.Resampling.LANCZOS))
    return rgb


def score_views(generated: list[np.ndarray], truth: list[np.ndarray], size: int = SCORE_SIZE,
                with_lpips: bool = True) -> dict:
    """Mean PSNR (dB), SSIM and LPIPS (None when unavailable) over corresponding views."""
    if len(generated) != len(truth):
        raise ValueError(f"{len(generated)} generated views for {len(truth)} ground-truth views")
    psnrs, ssims, lpipss = [], [], []
    for a, b in zip(generated, truth):
        a, b = on_white(a, size), on_white(b, size)
        psnrs.append(min(metrics.psnr(a, b), 100.0))  # identical views would be inf: cap for means
        ssims.append(metrics.ssim(a, b))
        if with_lpips:
            value = metrics.lpips(a, b)
            if value is None:
                with_lpips = False
            else:
                lpipss.append(value)
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "lpips": float(np.mean(lpipss)) if with_lpips and lpipss else None}


@dataclass
class MeshReference:
    """The ground-truth solid of one object, sampled once."""

    surface: np.ndarray  # (S, 3) points on its outer surface
    occupancy: np.ndarray  # (R, R, R) bool
    samples: int
    iou_resolution: int

    @classmethod
    def of(cls, mesh, samples: int = metrics.DEFAULT_SURFACE_SAMPLES,
           iou_resolution: int = metrics.DEFAULT_IOU_RESOLUTION) -> "MeshReference":
        # solid_*: procedural objects are overlapping closed parts; their buried faces are no
        # surface. Buried points are found on a grid 1.5x finer than the IoU grid (192 for the
        # default 128, metrics' own default); quick runs with a coarse IoU grid save that time too.
        buried_resolution = max(32, round(1.5 * iou_resolution))
        return cls(metrics.solid_surface_samples(mesh, samples, seed=0, resolution=buried_resolution),
                   metrics.solid_occupancy(mesh, iou_resolution), samples, iou_resolution)


def score_mesh(mesh, reference: MeshReference, fscore_threshold: float = metrics.DEFAULT_FSCORE_THRESHOLD) -> dict:
    """Chamfer (L2, unit-cube scale), F-score at ``fscore_threshold`` and volume IoU of a
    reconstructed mesh. Reconstructions are marching-cubes surfaces (no overlapping parts), so
    plain surface sampling and a parity fill are exact for them."""
    from scipy.spatial import cKDTree

    points = metrics.sample_surface(mesh, reference.samples, seed=1)
    to_truth, _ = cKDTree(reference.surface).query(points, workers=-1)
    from_truth, _ = cKDTree(points).query(reference.surface, workers=-1)
    precision, recall = float((to_truth < fscore_threshold).mean()), float((from_truth < fscore_threshold).mean())
    occupancy = metrics.voxelize(mesh, reference.iou_resolution)
    union = np.logical_or(occupancy, reference.occupancy).sum()
    iou = 1.0 if union == 0 else float(np.logical_and(occupancy, reference.occupancy).sum() / union)
    return {
        "chamfer": float(0.5 * (to_truth.mean() + from_truth.mean())),
        "fscore": 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall),
        "iou": iou,
    }


def failed_mesh_scores() -> dict:
    """A reconstruction that found no object: nothing overlaps the truth; no distance exists."""
    return {"chamfer": None, "fscore": 0.0, "iou": 0.0}


def score_object(task: dict) -> dict:
    """All scores of one object (runs in a worker process when the run has workers).

    task: "mesh_path" (ground truth), "view_paths" (its 32 views), "meshes" {key: trimesh or
    None}, "views" {key: 32 generated RGBA arrays}, and the settings "samples",
    "iou_resolution", "fscore_threshold", "score_size", "lpips". Returns {"meshes": {key:
    scores}, "views": {key: scores}, "lpips_note": str}.
    """
    from ..data.assets import load_asset
    from .evalset_reader import read_rgba

    reference = MeshReference.of(load_asset(task["mesh_path"], normalise=False), task["samples"], task["iou_resolution"])
    meshes = {key: score_mesh(mesh, reference, task["fscore_threshold"]) if mesh is not None else failed_mesh_scores()
              for key, mesh in task["meshes"].items()}
    truth = [read_rgba(path) for path in task["view_paths"]] if task["views"] else []
    views = {key: score_views(generated, truth, task["score_size"], task["lpips"]) for key, generated in task["views"].items()}
    return {"meshes": meshes, "views": views, "lpips_note": metrics.lpips_note}
