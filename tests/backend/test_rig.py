"""The camera rig: angles, distances, look-at directions and the projection conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mvdpp import rig


def test_rig_has_32_views_on_8_azimuths_and_4_elevations_at_distance_1_5():
    cams = rig.rig_cameras()
    assert [c.index for c in cams] == list(range(32))
    assert sorted({c.azimuth_deg for c in cams}) == [0, 45, 90, 135, 180, 225, 270, 315]
    assert sorted({c.elevation_deg for c in cams}) == [-30, 0, 30, 60]
    for cam in cams:
        assert np.linalg.norm(cam.position) == pytest.approx(1.5)
        assert cam.fov_deg == 60.0
        # elevation is the angle of the position above the XY plane
        assert math.degrees(math.asin(cam.position[2] / 1.5)) == pytest.approx(cam.elevation_deg)


def test_every_rig_camera_looks_at_the_origin_with_gravity_up():
    for cam in rig.rig_cameras():
        c2w = cam.c2w
        forward = -c2w[:3, 2]
        assert np.allclose(forward, -cam.position / np.linalg.norm(cam.position))
        assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)
        assert abs(c2w[2, 0]) < 1e-12  # image x axis stays horizontal (no roll)
        assert c2w[2, 1] > 0  # image up points to world +Z


def test_azimuth_zero_is_the_front_view_and_azimuth_grows_counter_clockwise():
    front = rig.Camera(0, 0, 1.5)
    right = rig.Camera(90, 0, 1.5)
    assert np.allclose(front.position, [0, -1.5, 0])
    assert np.allclose(right.position, [1.5, 0, 0])


def test_projection_puts_origin_at_the_image_centre_and_frustum_edge_at_the_border():
    cam = rig.Camera(45, 30, 1.5)
    pixels, depth = rig.project_points(np.zeros((1, 3)), cam, 256)
    assert np.allclose(pixels, [[128, 128]])
    assert depth[0] == pytest.approx(1.5)
    # a point on the camera's right edge of the 60 degree frustum lands on the image's right border
    c2w = cam.c2w
    edge = cam.position - 1.0 * c2w[:3, 2] + math.tan(math.radians(30)) * c2w[:3, 0] + math.tan(math.radians(30)) * c2w[:3, 1]
    pixels, _ = rig.project_points(edge[None], cam, 256)
    assert np.allclose(pixels, [[256, 0]])


def test_a_sphere_of_diameter_one_fits_in_every_rig_view_but_cube_corners_may_not():
    # the rig's 60 degree frustum at distance 1.5 holds the ball of radius 0.5 (angular radius
    # 19.5 deg < 30 deg); the corners of a full unit cube (radius 0.87) can fall outside
    directions = np.random.default_rng(0).normal(size=(2000, 3))
    ball = 0.5 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    clipped = 0
    for cam in rig.rig_cameras():
        pixels, depth = rig.project_points(ball, cam, 512)
        assert (depth > 0).all()
        assert pixels.min() >= 0 and pixels.max() <= 512
        pixels, _ = rig.project_points(corners, cam, 512)
        clipped += pixels.min() < 0 or pixels.max() > 512
    assert clipped > 0  # documented in rig.py: reconstruction must treat off-image as unknown


def test_input_camera_sampler_follows_the_training_distribution():
    rng = np.random.default_rng(0)
    cams = [rig.sample_input_camera(rng) for _ in range(500)]
    assert {c.azimuth_deg for c in cams} <= set(rig.RIG_AZIMUTHS_DEG)
    assert all(-10 <= c.elevation_deg <= 45 for c in cams)
    assert all(1.5 <= c.distance <= 2.2 for c in cams)
    assert rig.sample_input_camera(rng, azimuth_deg=0.0).azimuth_deg == 0.0


def test_camera_dict_round_trip_and_opencv_conversion():
    cam = rig.rig_cameras()[13]
    again = rig.Camera.from_dict(cam.to_dict())
    assert again == cam and np.allclose(again.c2w, cam.c2w)
    cv = rig.blender_to_opencv_c2w(cam.c2w)
    assert np.allclose(cv[:3, 2], -cam.c2w[:3, 2])  # OpenCV's z looks forward
