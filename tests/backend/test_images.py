"""Input images: every format and mode, EXIF orientation, masks, framing and every bad-input case."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mvdpp.errors import MVDPPError
from mvdpp.service.images import OBJECT_FILL, load_input, load_inputs

RES = 64


def object_on(background, size=(120, 90), box=(30, 20, 70, 60), colour=(200, 30, 30)):
    """An RGB image with a rectangular object of ``colour`` on a plain ``background``."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[:] = background
    left, top, right, bottom = box
    array[top:bottom, left:right] = colour
    return array


def alpha_bbox(image, threshold=128):
    alpha = np.asarray(image)[..., 3]
    rows, cols = np.flatnonzero((alpha >= threshold).any(1)), np.flatnonzero((alpha >= threshold).any(0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def assert_framed(image, resolution=RES):
    """Square RGBA, object bbox centred, its longest side OBJECT_FILL of the image, white background."""
    assert image.mode == "RGBA" and image.size == (resolution, resolution)
    top, bottom, left, right = alpha_bbox(image)
    assert abs((top + bottom) / 2 - resolution / 2) <= 1.5 and abs((left + right) / 2 - resolution / 2) <= 1.5
    assert abs(max(bottom - top, right - left) / resolution - OBJECT_FILL) < 0.05
    rgba = np.asarray(image)
    background = rgba[..., 3] == 0
    assert background.any() and (rgba[background][:, :3] >= 250).all()  # RGB composited over white


def test_framing_matches_the_training_camera_distances():
    # a ball of diameter 1 seen from the training input distances with the rig's FoV
    import math

    from mvdpp import rig

    spans = [math.tan(math.asin(0.5 / d)) / math.tan(math.radians(rig.FOV_DEG / 2)) for d in rig.INPUT_DISTANCE_RANGE]
    assert min(spans) < OBJECT_FILL < max(spans)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("TIFF", ".tif"), ("BMP", ".bmp")])
def test_every_format_on_a_plain_background(tmp_path, fmt, suffix):
    path = tmp_path / f"object{suffix}"
    Image.fromarray(object_on((255, 255, 255))).save(path, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    item = load_input(path, RES)
    assert item.mask_method == "plain-background"
    assert_framed(item.image)
    # the object keeps its colour
    rgba = np.asarray(item.image)
    centre = rgba[RES // 2, RES // 2]
    assert centre[3] == 255 and abs(int(centre[0]) - 200) < 20 and centre[1] < 60


def make_mode(mode: str) -> Image.Image:
    """The same object (a 40x40 square in a 120x90 canvas) in Pillow ``mode``."""
    rgb = object_on((255, 255, 255), colour=(40, 40, 40))
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[20:60, 30:70] = 255
    base = Image.fromarray(rgb)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if mode == "LA":
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA").convert("LA")
    if mode == "P-transparency":
        image = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
        palette_index = np.asarray(image)[0, 0]
        image.info["transparency"] = int(palette_index)  # the white backdrop is transparent
        return image
    if mode == "I;16":
        return Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    if mode == "CMYK":
        return base.convert("CMYK")
    return base.convert(mode)


@pytest.mark.parametrize("mode, fmt, expected_mask",
                         [("RGB", "PNG", "plain-background"), ("RGBA", "PNG", "alpha"), ("L", "PNG", "plain-background"),
                          ("LA", "PNG", "alpha"), ("P-transparency", "PNG", "alpha"), ("CMYK", "JPEG", "plain-background"),
                          ("CMYK", "TIFF", "plain-background"), ("I;16", "PNG", "plain-background"),
                          ("1", "PNG", "plain-background"), ("P", "BMP", "plain-background")])
def test_every_pillow_mode(tmp_path, mode, fmt, expected_mask):
    path = tmp_path / f"object.{fmt.lower()}"
    image = make_mode(mode)
    image.save(path, fmt)
    assert Image.open(path).mode == image.mode  # the file really is in that mode
    item = load_input(path, RES)
    assert item.mask_method == expected_mask
    assert_framed(item.image)
    dark = np.asarray(item.image)[RES // 2, RES // 2]
    assert dark[3] == 255 and dark[0] < 80  # the dark object survived the mode conversion


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.full((60, 60), 65535, np.uint16)
    values[20:40, 20:40] = 32768  # mid grey in 16 bits
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    rgba = np.asarray(load_input(path, RES).image)
    assert abs(int(rgba[RES // 2, RES // 2, 0]) - 128) <= 2


def test_alpha_is_the_mask_even_when_colours_match_the_backdrop(tmp_path):
    # A white object on a transparent white canvas: only alpha can tell where it is.
    rgba = np.full((80, 80, 4), 255, np.uint8)
    rgba[..., 3] = 0
    rgba[10:30, 10:60, 3] = 255
    path = tmp_path / "white.png"
    Image.fromarray(rgba, "RGBA").save(path)
    item = load_input(path, RES)
    assert item.mask_method == "alpha"
    top, bottom, left, right = alpha_bbox(item.image)
    assert (right - left) > 2 * (bottom - top)  # the 50x20 shape, framed


def test_exif_orientation_is_honoured(tmp_path):
    # A wide object stored landscape with "rotate 90" in EXIF must come out tall.
    image = Image.fromarray(object_on((255, 255, 255), size=(120, 120), box=(20, 50, 100, 70)))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif, quality=95)
    top, bottom, left, right = alpha_bbox(load_input(path, RES).image)
    assert (bottom - top) > 2 * (right - left)


def test_plain_background_removal_keeps_backdrop_coloured_details_inside(tmp_path):
    rgb = object_on((128, 128, 128), size=(100, 100), box=(25, 25, 75, 75), colour=(20, 60, 200))
    rgb[45:55, 45:55] = (128, 128, 128)  # a backdrop-coloured label inside the object
    path = tmp_path / "grey_backdrop.png"
    Image.fromarray(rgb).save(path)
    rgba = np.asarray(load_input(path, RES).image)
    assert rgba[RES // 2, RES // 2, 3] == 255  # the label is part of the object
    assert rgba[1, 1, 3] == 0 and (rgba[1, 1, :3] == 255).all()  # backdrop gone, white behind
    # the object's opaque area is the 50x50 square scaled to OBJECT_FILL: no halo, no holes
    opaque = (rgba[..., 3] > 128).sum()
    assert abs(opaque / (OBJECT_FILL * RES) ** 2 - 1) < 0.15


def test_cluttered_background_needs_alpha_or_a_segmenter(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    path = tmp_path / "cluttered.jpg"
    Image.fromarray(rgb).save(path)
    with pytest.raises(MVDPPError) as info:
        load_input(path, RES, segmenters={})
    assert info.value.code == "bad_input" and str(path) in info.value.message and "rembg" in info.value.hint

    def fake_segmenter(array):  # stands in for an installed segmentation model
        mask = np.zeros(array.shape[:2], np.float32)
        mask[20:60, 30:50] = 1.0
        return mask

    def missing_segmenter(array):
        raise ImportError("not installed")

    item = load_input(path, RES, segmenters={"missing": missing_segmenter, "fake": fake_segmenter})
    assert item.mask_method == "fake"
    assert_framed(item.image)


def test_load_inputs_reports_progress_and_keeps_order(tmp_path):
    paths = []
    for index, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(object_on((255, 255, 255), colour=colour)).save(paths[-1])
    reports = []
    items = load_inputs(paths, RES, progress=lambda *a: reports.append(a))
    assert [item.source for item in items] == paths
    assert reports == [("load_inputs", i, 3) for i in (1, 2, 3)]
    assert [int(np.argmax(np.asarray(i.image)[RES // 2, RES // 2, :3])) for i in items] == [0, 1, 2]


# ------------------------------------------------------------------------------ bad inputs


def write_bad_file(tmp_path, case):
    path = tmp_path / f"{case}.png"
    if case == "missing":
        return path, "no such file"
    if case == "empty":
        path.write_bytes(b"")
        return path, "empty"
    if case == "not_an_image":
        path.write_text("hello, I am text")
        return path, "not an image"
    if case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, "truncated"
    if case == "huge":
        Image.new("L", (8193, 16), 255).save(path)
        return path, "too large"
    if case == "folder":
        path.mkdir()
        return path, "not a file"
    if case == "gif":
        path = tmp_path / "animated.gif"
        Image.fromarray(object_on((255, 255, 255))).save(path, "GIF")
        return path, "not supported"
    if case == "fully_transparent":
        Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(path)
        return path, "no object"
    if case == "blank":
        Image.new("RGB", (64, 64), (255, 255, 255)).save(path)
        return path, "no object"
    raise AssertionError(case)


BAD_CASES = ["missing", "empty", "not_an_image", "truncated", "huge", "folder", "gif", "fully_transparent", "blank"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_get_a_clear_error_naming_the_file(tmp_path, case):
    path, expected = write_bad_file(tmp_path, case)
    good = tmp_path / "good.png"
    Image.fromarray(object_on((255, 255, 255))).save(good)
    with pytest.raises(MVDPPError) as info:
        load_inputs([good, path], RES)
    error = info.value
    assert error.code == "bad_input"
    assert str(path) in error.message and expected in error.message
    assert error.hint and "\n" not in error.message


@pytest.mark.parametrize("count", [0, 11])
def test_one_to_ten_images(tmp_path, count):
    with pytest.raises(MVDPPError) as info:
        load_inputs([tmp_path / "x.png"] * count, RES)
    assert info.value.code == "bad_input" and str(count) in info.value.message and "1 to 10" in info.value.message


def test_ten_images_are_fine(tmp_path):
    path = tmp_path / "object.png"
    Image.fromarray(object_on((255, 255, 255))).save(path)
    assert len(load_inputs([path] * 10, 32)) == 10
