"""Random surface appearance of procedural parts, as solid (3D) textures.

A pattern maps points in a part's local frame to RGBA colours; the procedural generator
evaluates it at the vertices of finely tessellated parts, so the coloured ground-truth mesh and
its renders agree exactly (vertex colours, no texture maps).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

PATTERN_KINDS = ("flat", "stripes", "checkers", "noise", "gradient")


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour, mostly saturated, sometimes near-grey (float RGB in [0, 1])."""
    hue = rng.uniform()
    saturation = rng.uniform(0.05, 0.3) if rng.uniform() < 0.2 else rng.uniform(0.4, 1.0)
    value = rng.uniform(0.35, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value))


def contrasting_colour(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A second colour visibly different from ``colour`` (so patterns show)."""
    for _ in range(8):
        other = random_colour(rng)
        if np.abs(other - colour).sum() > 0.6:
            return other
    return 1.0 - colour


@dataclass
class Pattern:
    kind: str
    colour_a: np.ndarray
    colour_b: np.ndarray
    axis: np.ndarray  # unit vector (stripes, gradient)
    frequency: float  # periods per unit length (stripes, checkers, noise)
    extent: float  # the part's size (gradient span)
    duty: float  # stripe fill fraction
    permutation: np.ndarray  # noise lattice hash

    @classmethod
    def random(cls, rng: np.random.Generator, extent: float, kind: str | None = None) -> "Pattern":
        kind = kind or str(rng.choice(PATTERN_KINDS, p=[0.25, 0.2, 0.15, 0.2, 0.2]))
        colour_a = random_colour(rng)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        return cls(
            kind=kind,
            colour_a=colour_a,
            colour_b=contrasting_colour(rng, colour_a),
            axis=axis,
            # 2-6 periods across the part: visible at 256 px, not aliased
            frequency=float(rng.uniform(2.0, 6.0) / max(extent, 1e-3)),
            extent=float(extent),
            duty=float(rng.uniform(0.3, 0.7)),
            permutation=rng.permutation(256),
        )

    def colours(self, points: np.ndarray) -> np.ndarray:
        """uint8 RGBA (N, 4) at local points (N, 3)."""
        points = np.asarray(points, dtype=np.float64)
        if self.kind == "flat":
            t = np.zeros(len(points))
        elif self.kind == "stripes":
            t = (np.mod(points @ self.axis * self.frequency, 1.0) < self.duty).astype(np.float64)
        elif self.kind == "checkers":
            cells = np.floor(points * self.frequency).astype(np.int64).sum(axis=1)
            t = (cells % 2).astype(np.float64)
        elif self.kind == "noise":
            t = value_noise(points * self.frequency, self.permutation)
            t = np.clip((t - 0.5) * 1.6 + 0.5, 0.0, 1.0)  # more contrast
        elif self.kind == "gradient":
            t = np.clip(points @ self.axis / max(self.extent, 1e-6) + 0.5, 0.0, 1.0)
        else:
            raise ValueError(f"unknown pattern {self.kind!r}")
        rgb = self.colour_a[None, :] * (1.0 - t[:, None]) + self.colour_b[None, :] * t[:, None]
        rgba = np.concatenate([rgb, np.ones((len(points), 1))], axis=1)
        return np.round(rgba * 255.0).astype(np.uint8)


def value_noise(points: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] (lattice values hashed by ``permutation``, trilinear)."""
    cell = np.floor(points).astype(np.int64)
    frac = points - cell
    smooth = frac * frac * (3.0 - 2.0 * frac)
    perm = np.asarray(permutation, dtype=np.int64)

    def lattice(dx: int, dy: int, dz: int) -> np.ndarray:
        x, y, z = (cell[:, 0] + dx) & 255, (cell[:, 1] + dy) & 255, (cell[:, 2] + dz) & 255
        return perm[(perm[(perm[x] + y) & 255] + z) & 255] / 255.0

    result = np.zeros(len(points))
    for dx in (0, 1):
        wx = smooth[:, 0] if dx else 1.0 - smooth[:, 0]
        for dy in (0, 1):
            wy = smooth[:, 1] if dy else 1.0 - smooth[:, 1]
            for dz in (0, 1):
                wz = smooth[:, 2] if dz else 1.0 - smooth[:, 2]
                result += wx * wy * wz * lattice(dx, dy, dz)
    return result
