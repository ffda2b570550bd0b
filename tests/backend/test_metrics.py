"""Metrics with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from mvdpp import metrics


def test_psnr_of_a_known_error_and_of_identical_images():
    a = np.zeros((8, 8, 3), np.float64)
    b = np.full((8, 8, 3), 0.1)
    assert metrics.psnr(a, b) == pytest.approx(20.0)  # MSE 0.01
    assert metrics.psnr(a, a) == math.inf
    # uint8 RGBA: alpha is ignored, values scale by 255
    c = np.zeros((4, 4, 4), np.uint8)
    d = c.copy()
    d[..., :3] = 51  # 0.2 -> MSE 0.04 -> 13.98 dB
    d[..., 3] = 255
    assert metrics.psnr(c, d) == pytest.approx(10 * math.log10(1 / 0.04))
    with pytest.raises(ValueError):
        metrics.psnr(a, np.zeros((4, 4, 3)))


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 3))
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    light = metrics.ssim(image, np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1))
    heavy = metrics.ssim(image, np.clip(image + rng.normal(0, 0.3, image.shape), 0, 1))
    assert 1.0 > light > heavy > 0.0


def test_lpips_is_a_number_or_skipped_with_a_note():
    image = np.zeros((32, 32, 3), np.uint8)
    value = metrics.lpips(image, image)
    if value is None:
        assert metrics.lpips_note.startswith("LPIPS skipped")
    else:
        assert value == pytest.approx(0.0, abs=1e-4)


def test_identical_meshes_score_perfectly():
    sphere = trimesh.creation.icosphere(4, radius=0.3)
    assert metrics.chamfer_distance(sphere, sphere, 20_000) == 0.0
    assert metrics.f_score(sphere, sphere, samples=20_000) == 1.0
    assert metrics.volume_iou(sphere, sphere, 64) == 1.0


def test_shifted_sphere_matches_the_analytic_chamfer_and_iou():
    r, d = 0.3, 0.06
    a = trimesh.creation.icosphere(6, radius=r)
    b = a.copy()
    b.apply_translation([d, 0, 0])
    # A point r*u of one sphere is | |r u - d e_x| - r | from the other; u_x is uniform on [-1, 1]
    # (Archimedes), so the directed mean is a 1-D integral (both directions are equal).
    x = np.linspace(-1, 1, 200_001)
    expected = np.trapz(np.abs(np.sqrt(r * r - 2 * r * d * x + d * d) - r), x) / 2
    assert metrics.chamfer_distance(a, b, 100_000) == pytest.approx(expected, rel=0.05)
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12  # intersection of two balls
    ball = 4 / 3 * math.pi * r**3
    assert metrics.volume_iou(a, b, 128) == pytest.approx(lens / (2 * ball - lens), abs=0.01)
    # F-score: every point is within d of the other surface, almost none within d / 10
    assert metrics.f_score(a, b, threshold=d + 1e-3, samples=20_000) == pytest.approx(1.0)
    assert metrics.f_score(a, b, threshold=d / 10, samples=20_000) < 0.3


def test_box_voxelises_to_its_volume():
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.2))
    pitch = 2 * metrics.IOU_BOX_HALF / 110
    assert metrics.voxelize(box, 110).sum() * pitch**3 == pytest.approx(box.volume, rel=0.05)


def test_overlapping_parts_count_as_their_union():
    """Procedural objects are concatenated overlapping parts: buried faces are no surface, and
    the overlap is solid (a single parity fill would empty it)."""
    left = trimesh.creation.box(bounds=[[-0.3, -0.2, -0.2], [0.1, 0.2, 0.2]])
    right = trimesh.creation.box(bounds=[[-0.1, -0.2, -0.2], [0.3, 0.2, 0.2]])
    parts = trimesh.util.concatenate([left.subdivide().subdivide(), right.subdivide().subdivide()])
    union = trimesh.creation.box(bounds=[[-0.3, -0.2, -0.2], [0.3, 0.2, 0.2]])
    assert metrics.volume_iou(parts, union, 96) > 0.97
    assert metrics.chamfer_distance(parts, union, 30_000) < 0.004
    # without that care, the buried faces would cost ~0.01 of Chamfer: the test can tell
    naive = metrics._directed_distances(metrics.sample_surface(parts, 30_000), metrics.sample_surface(union, 30_000))
    assert 0.5 * (naive[0].mean() + naive[1].mean()) > 0.006
