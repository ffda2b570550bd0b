"""The input views as tensors: validated RGBA images and the cameras' projection in torch.

Conventions are mvdpp.rig's: Blender camera matrices (looking along local -Z), square images,
pixel (x right, y down) with pixel centres at +0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BAD_INPUT, MVDPPError
from ..rig import Camera


@dataclass
class ViewSet:
    rgb: torch.Tensor        # (V, 3, S, S) float in [0, 1], composited over white
    alpha: torch.Tensor      # (V, 1, S, S) float in [0, 1]
    w2c: torch.Tensor        # (V, 4, 4)
    c2w: torch.Tensor        # (V, 4, 4)
    focal: torch.Tensor      # (V,) focal length in pixels
    size: int

    @property
    def count(self) -> int:
        return self.rgb.shape[0]

    @property
    def device(self) -> torch.device:
        return self.rgb.device

    def project(self, points: torch.Tensor, view: int) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (N, 3) -> pixel coordinates (N, 2) and depth along the view axis (N,)."""
        w2c = self.w2c[view]
        cam = points @ w2c[:3, :3].T + w2c[:3, 3]
        depth = -cam[:, 2]
        safe = depth.clamp_min(1e-6)
        f = self.focal[view]
        x = self.size / 2.0 + f * cam[:, 0] / safe
        y = self.size / 2.0 - f * cam[:, 1] / safe
        return torch.stack([x, y], dim=1), depth

    def project_all(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (N, 3) -> pixel coordinates (V, N, 2) and depths (V, N) in every view."""
        cam = torch.einsum("vij,nj->vni", self.w2c[:, :3, :3], points) + self.w2c[:, None, :3, 3]
        depth = -cam[..., 2]
        safe = depth.clamp_min(1e-6)
        f = self.focal[:, None]
        x = self.size / 2.0 + f * cam[..., 0] / safe
        y = self.size / 2.0 - f * cam[..., 1] / safe
        return torch.stack([x, y], dim=-1), depth

    def sample_all(self, images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of (V, C, S, S) images at (V, N, 2) pixel coordinates -> (V, C, N)."""
        grid = (pixels / self.size * 2.0 - 1.0)[:, None].to(images.dtype)
        return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                                               align_corners=False)[:, :, 0]

    def inside_image(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return (depth > 0) & (pixels >= 0).all(-1) & (pixels < self.size).all(-1)

    def sample(self, image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of one (C, S, S) image at pixel coordinates (N, 2) -> (N, C)."""
        grid = (pixels / self.size * 2.0 - 1.0).view(1, 1, -1, 2).to(image.dtype)
        out = torch.nn.functional.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0, :, 0].T


def as_view_set(images, cameras, device: torch.device) -> ViewSet:
    """Validate the reconstruction's inputs and move them to ``device``."""
    if len(images) == 0:
        raise MVDPPError(BAD_INPUT, "no views were given to the reconstruction", "pass the 32 generated RGBA views")
    if len(images) != len(cameras):
        raise MVDPPError(BAD_INPUT, f"{len(images)} views but {len(cameras)} cameras were given",
                         "pass one mvdpp.rig.Camera per view, in the same order")
    if len(images) < 4:
        raise MVDPPError(BAD_INPUT, f"only {len(images)} views were given; a mesh needs views from around the object",
                         "pass the 32 rig views (at least 4)")
    arrays = []
    for i, image in enumerate(images):
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 4 or array.shape[0] != array.shape[1]:
            raise MVDPPError(BAD_INPUT, f"view {i} has shape {array.shape}, expected a square RGBA image (S, S, 4)",
                             "pass uint8 RGBA views whose alpha is the object mask")
        if array.shape != np.asarray(images[0]).shape:
            raise MVDPPError(BAD_INPUT, f"view {i} is {array.shape[1]}x{array.shape[0]} but view 0 is "
                             f"{np.asarray(images[0]).shape[1]}x{np.asarray(images[0]).shape[0]}",
                             "all views must have the same size")
        if array.dtype != np.uint8:
            raise MVDPPError(BAD_INPUT, f"view {i} has dtype {array.dtype}, expected uint8", "pass uint8 RGBA views")
        arrays.append(array)
    for i, camera in enumerate(cameras):
        if not isinstance(camera, Camera):
            raise MVDPPError(BAD_INPUT, f"camera {i} is a {type(camera).__name__}, not an mvdpp.rig.Camera",
                             "build cameras with mvdpp.rig (e.g. rig_cameras())")
    stack = torch.from_numpy(np.stack(arrays)).to(device=device, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    alpha = stack[:, 3:4]
    if float(alpha.amax()) < 0.5:
        raise MVDPPError(BAD_INPUT, "every view's alpha (the object mask) is empty", "pass RGBA views whose alpha marks the object")
    # The contract says RGB is already composited over white; force it where the mask is empty so
    # a producer that left black (or junk) behind a zero alpha does not paint the background.
    rgb = torch.where(alpha > 0, stack[:, :3], torch.ones_like(stack[:, :3]))
    c2w = torch.tensor(np.stack([c.c2w for c in cameras]), dtype=torch.float32, device=device)
    w2c = torch.linalg.inv(c2w)
    size = arrays[0].shape[0]
    focal = torch.tensor([c.focal_px(size) for c in cameras], dtype=torch.float32, device=device)
    return ViewSet(rgb=rgb, alpha=alpha, w2c=w2c, c2w=c2w, focal=focal, size=size)
