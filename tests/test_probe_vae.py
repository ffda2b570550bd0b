"""tools/probe_vae.py: the VAE round-trip figures and the encoder's colour probe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("probe_vae", ROOT / "tools" / "probe_vae.py")
probe_vae = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe_vae)


def coloured_views(count=6, size=64, seed=0):
    """uint8 RGBA views: an opaque square of random 8x8-patch colours on a transparent background."""
    rng = np.random.default_rng(seed)
    views = np.zeros((count, size, size, 4), dtype=np.uint8)
    views[..., :3] = 255
    patches = rng.integers(0, 256, (count, size // 8, size // 8, 3), dtype=np.uint8)
    views[:, 8:56, 8:56, :3] = np.kron(patches, np.ones((1, 8, 8, 1), dtype=np.uint8))[:, 8:56, 8:56]
    views[:, 8:56, 8:56, 3] = 255
    return views


def test_a_grey_shift_costs_psnr_but_no_chroma_and_a_hue_shift_costs_chroma():
    truth = coloured_views()
    inside = truth[..., 3] > 0
    brighter, redder = truth.copy(), truth.copy()
    brighter[inside, :3] = (truth[inside, :3].astype(int) + 10).clip(0, 255)  # no channel clips: at most 255 -> 255
    redder[inside, 0] = (truth[inside, 0].astype(int) + 40).clip(0, 255)
    grey = probe_vae.decoder_figures(truth, brighter)
    hue = probe_vae.decoder_figures(truth, redder)
    assert grey["psnr_object"] < grey["psnr_view"] < 60  # the error sits on the object
    assert grey["chroma_rmse"] < 0.01 < hue["chroma_rmse"]


def test_colour_probe_finds_colour_the_latents_carry_and_not_what_they_lack():
    views = probe_vae.to_model_range(coloured_views(count=16))
    rgb = torch.nn.functional.avg_pool2d(views[:, :3], 8)  # (N, 3, 8, 8): each patch's colour
    carrying = torch.cat([rgb, torch.zeros_like(rgb[:, :1])], dim=1)  # 4 "latent" channels
    blind = torch.randn_like(carrying)
    assert probe_vae.colour_probe(views, carrying).min() > 0.95
    assert probe_vae.colour_probe(views, blind).max() < 0.5
