"""The voxel grid that spans the object box: index <-> world coordinates.

Values live at voxel corners ("nodes"): node (i, j, k) sits at ``lo + (i, j, k) * spacing`` with
i along world X, j along Y, k along Z, so marching cubes' vertex indices map straight to world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Grid:
    resolution: int        # nodes per side
    half_size: float       # the grid spans [-half_size, half_size]^3

    @property
    def lo(self) -> float:
        return -self.half_size

    @property
    def spacing(self) -> float:
        return 2.0 * self.half_size / (self.resolution - 1)

    def node_points(self, device, dtype=torch.float32) -> torch.Tensor:
        """World positions of all nodes, (R, R, R, 3), indexed [i, j, k] = [x, y, z]."""
        axis = torch.linspace(-self.half_size, self.half_size, self.resolution, device=device, dtype=dtype)
        x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
        return torch.stack([x, y, z], dim=-1)

    def to_world(self, index_coords: np.ndarray) -> np.ndarray:
        return self.lo + np.asarray(index_coords, dtype=np.float64) * self.spacing

    def normalised(self, points: torch.Tensor) -> torch.Tensor:
        """World points -> grid_sample coordinates of a (1, C, R, R, R) volume stored [z][y][x]-major.

        grid_sample's last coordinate axis order is (x, y, z) over a (D, H, W) volume, i.e. it
        indexes W with x. Volumes here are stored as [i, j, k] = [x, y, z], so the sampling
        coordinates are reversed to (z, y, x).
        """
        return (points / self.half_size).flip(-1)
