"""Reference images in, model-ready object views out.

``load_inputs(paths, resolution)`` reads 1-10 image files (PNG, JPEG, WebP, TIFF, BMP in any
Pillow mode, EXIF orientation honoured), finds the object (alpha when the image has it; else a
segmentation model if one is installed, else a built-in background removal for plain studio
backgrounds), composites it over white and centres and scales it the way the training renders
frame an object. Every problem with a file is an MVDPPError (code ``bad_input``) that names it.

numpy, Pillow and scipy only (no torch).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import errors, rig
from ..errors import MVDPPError

MAX_SIDE_PX = 8192
MIN_SIDE_PX = 16
SUPPORTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "TIFF": "TIFF", "BMP": "BMP", "DIB": "BMP"}
SUPPORTED_LIST = "PNG, JPEG, WebP, TIFF or BMP"


#: Fraction of the image side the object's 2D bounding box spans after framing: like the
#: training renders. An object of longest side 1 seen from rig.INPUT_DISTANCE_RANGE (1.5-2.2)
#: with a 60 degree FoV spans about 0.40-0.61 of the image (a ball of diameter 1:
#: tan(asin(0.5 / d)) / tan(30 deg)). Measured on the training renders (160 views of 40
#: procedural objects at sampled input cameras, docs/backend.md): median 0.46, p10 0.38, p90
#: 0.56, bounding-box centre within 3% of the image centre on average.
OBJECT_FILL = 0.47


@dataclass
class NormalisedInput:
    source: Path  # the file as given
    image: "object"  # PIL.Image.Image, RGBA, square, object centred; RGB composited over white
    mask_method: str  # "alpha", "plain-background" or the segmentation model's name


# ---------------------------------------------------------------------------------- reading


def bad_input(path: Path, problem: str, hint: str) -> MVDPPError:
    return MVDPPError(errors.BAD_INPUT, f"{path}: {problem}", hint)


def read_image(path: str | os.PathLike):
    """Open one image file fully, EXIF orientation applied. Returns a PIL image in its own mode."""
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.exists():
        raise bad_input(path, "no such file", "Check the path; the file may have been moved or deleted.")
    if not path.is_file():
        raise bad_input(path, "is not a file", f"Give {SUPPORTED_LIST} image files, not folders.")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise bad_input(path, f"cannot be read ({exc.strerror})", "Check the file's permissions.") from exc
    if size == 0:
        raise bad_input(path, "is empty (0 bytes)", "Export or copy the image again.")
    try:
        with warnings.catch_warnings():
            # our own per-side limit below gives the clearer message; Pillow's hard limit stays
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:  # closes the file (multi-frame formats keep it open otherwise)
                width, height = opened.size
                if width > MAX_SIDE_PX or height > MAX_SIDE_PX:
                    raise bad_input(path, f"is too large ({width} x {height} pixels; at most {MAX_SIDE_PX} per side)",
                                    "Scale the image down; 1024 pixels per side is plenty.")
                if min(width, height) < MIN_SIDE_PX:
                    raise bad_input(path, f"is too small ({width} x {height} pixels)",
                                    "Use an image at least 256 pixels per side.")
                if opened.format not in SUPPORTED_FORMATS:
                    raise bad_input(path, f"is a {opened.format} image, which is not supported",
                                    f"Convert it to {SUPPORTED_LIST}.")
                opened.load()  # decode now: truncated or corrupt data fails here, not later
                image = ImageOps.exif_transpose(opened)
                if image is opened:
                    image = opened.copy()
    except MVDPPError:
        raise
    except Image.DecompressionBombError as exc:
        raise bad_input(path, f"is too large (more than {MAX_SIDE_PX} pixels per side)",
                        "Scale the image down; 1024 pixels per side is plenty.") from exc
    except Image.UnidentifiedImageError as exc:
        raise bad_input(path, "is not an image Pillow can read", f"Give {SUPPORTED_LIST} files.") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        detail = str(exc).strip().rstrip(".") or type(exc).__name__
        problem = "is truncated" if "truncated" in detail.lower() else f"cannot be decoded ({detail})"
        raise bad_input(path, problem, "The file is damaged or incomplete; export or copy it again.") from exc
    return image


def to_rgb_and_alpha(image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode -> (uint8 RGB (H, W, 3), float alpha in [0, 1] (H, W) or None when opaque)."""
    mode = image.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit / 32-bit greyscale: Pillow's own conversion to "L" clips instead of scaling
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        if mode == "F" and values.max() <= 1.0:
            peak = 1.0
        grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), None
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[..., 3].astype(np.float32) / 255.0
        if alpha.min() >= 1.0:
            alpha = None  # an alpha channel that hides nothing carries no mask
        return np.ascontiguousarray(rgba[..., :3]), alpha
    if mode == "CMYK":
        # Pillow's CMYK->RGB is the naive formula, good enough for object photos without a profile
        return np.asarray(image.convert("RGB")), None
    return np.asarray(image.convert("RGB")), None


# ---------------------------------------------------------------------------------- masks

#: Optional segmentation models, tried in order for images without alpha whose background is
#: not plain. Each takes uint8 RGB (H, W, 3) and returns alpha in [0, 1] (H, W), or raises
#: ImportError when its package is not installed.
Segmenter = Callable[[np.ndarray], np.ndarray]


def _rembg_segmenter(rgb: np.ndarray) -> np.ndarray:
    import rembg  # optional; the user installs it (and it fetches its own model weights)
    from PIL import Image

    cutout = rembg.remove(Image.fromarray(rgb))
    return np.asarray(cutout.convert("RGBA"))[..., 3].astype(np.float32) / 255.0


SEGMENTERS: dict[str, Segmenter] = {"rembg": _rembg_segmenter}


def plain_background_colour(rgb: np.ndarray, tolerance: float = 24.0) -> np.ndarray | None:
    """The background colour when the image border is (nearly) one colour, else None."""
    height, width = rgb.shape[:2]
    band = max(2, min(height, width) // 50)
    border = np.concatenate([
        rgb[:band].reshape(-1, 3), rgb[-band:].reshape(-1, 3),
        rgb[:, :band].reshape(-1, 3), rgb[:, -band:].reshape(-1, 3),
    ]).astype(np.float32)
    colour = np.median(border, axis=0)
    distance = np.linalg.norm(border - colour, axis=1)
    # A studio backdrop: almost all of the border close to one colour (the object may touch it).
    return colour if np.mean(distance < tolerance) >= 0.9 else None


def remove_plain_background(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Alpha for an object on a plain background of ``colour``.

    Background = pixels close to the backdrop colour that are connected to the image border,
    so that backdrop-coloured details inside the object (a white label) stay. Edges get a soft
    ramp between two colour distances so that anti-aliased outlines do not leave a halo.
    """
    from scipy import ndimage

    distance = np.linalg.norm(rgb.astype(np.float32) - colour, axis=2)
    border_noise = float(np.percentile(_border(distance), 95))
    low = max(12.0, 2.0 * border_noise)
    high = low + 30.0
    close = distance < low
    labels, _ = ndimage.label(close)
    border_labels = np.unique(_border(labels))
    background = np.isin(labels, border_labels[border_labels > 0])
    foreground = ~background
    # drop specks (dust, noise) far smaller than the object
    labels, count = ndimage.label(foreground)
    if count > 1:
        sizes = ndimage.sum(foreground, labels, index=np.arange(1, count + 1))
        keep = np.flatnonzero(sizes >= 0.01 * sizes.max()) + 1
        foreground = np.isin(labels, keep)
    # Outline pixels of the object mix object and backdrop: their alpha follows the colour distance.
    soft = np.clip((distance - low) / (high - low), 0.35, 1.0)
    outline = foreground & ~ndimage.binary_erosion(foreground, iterations=1)
    return np.where(outline, soft, foreground).astype(np.float32)


def _border(array: np.ndarray) -> np.ndarray:
    return np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel()])


def find_mask(path: Path, rgb: np.ndarray, segmenters: dict[str, Segmenter] | None = None) -> tuple[np.ndarray, str]:
    """Alpha for an opaque image: a plain backdrop is removed directly, anything else needs a segmenter."""
    colour = plain_background_colour(rgb)
    if colour is not None:
        return remove_plain_background(rgb, colour), "plain-background"
    for name, segmenter in (SEGMENTERS if segmenters is None else segmenters).items():
        try:
            return np.clip(segmenter(rgb), 0.0, 1.0).astype(np.float32), name
        except ImportError:
            continue
        except Exception as exc:  # noqa: BLE001 - a third-party model failing is the user's input problem
            raise bad_input(path, f"background removal with {name} failed ({type(exc).__name__}: {exc})",
                            "Remove the background yourself and save a PNG with transparency.") from exc
    raise bad_input(
        path,
        "has no transparency and its background is not a plain colour",
        "Save the object on a transparent background (PNG with alpha) or on a plain backdrop, "
        "or install a segmentation model (pip install rembg) in the backend's environment.",
    )


# ---------------------------------------------------------------------------------- framing


def frame_object(path: Path, rgb: np.ndarray, alpha: np.ndarray, resolution: int, fill: float = OBJECT_FILL):
    """Composite over white, centre the object's bounding box and scale it to ``fill`` of a square image."""
    from PIL import Image

    solid = alpha > 0.5
    if solid.sum() < max(16, 1e-4 * alpha.size):
        raise bad_input(path, "no object found (the mask is empty)",
                        "Make sure the object is visible and, with transparency, not fully transparent.")
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    side = max(bottom - top, right - left) / fill
    # Crop box in source pixels (may extend past the image: that part is empty background).
    box = (centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)

    over_white = rgb.astype(np.float32) * alpha[..., None] + 255.0 * (1.0 - alpha[..., None])
    colour = Image.fromarray(np.clip(over_white + 0.5, 0, 255).astype(np.uint8), "RGB")
    coverage = Image.fromarray(np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    # RGB ("over white") and alpha are resampled as separate images: Pillow would premultiply an
    # RGBA image, turning the transparent white padding black. Outside the source image the
    # result is white with alpha 0.
    side_px = int(math.ceil(side))
    strong_downscale = side > resolution * 2  # then average instead of sampling, against aliasing

    def resample(image, fill):
        if strong_downscale:
            big = image.transform((side_px, side_px), Image.Transform.EXTENT, box,
                                  resample=Image.Resampling.BILINEAR, fillcolor=fill)
            return big.resize((resolution, resolution), Image.Resampling.LANCZOS, reducing_gap=3.0)
        return image.transform((resolution, resolution), Image.Transform.EXTENT, box,
                               resample=Image.Resampling.BICUBIC, fillcolor=fill)

    framed = resample(colour, (255, 255, 255))
    framed.putalpha(resample(coverage, 0))
    return framed


# ---------------------------------------------------------------------------------- entry point


def load_input(path: str | os.PathLike, resolution: int, segmenters: dict[str, Segmenter] | None = None) -> NormalisedInput:
    path = Path(path)
    image = read_image(path)
    rgb, alpha = to_rgb_and_alpha(image)
    method = "alpha"
    if alpha is None:
        alpha, method = find_mask(path, rgb, segmenters)
    return NormalisedInput(path, frame_object(path, rgb, alpha, resolution), method)


def check_input_count(paths) -> list[Path]:
    paths = [Path(p) for p in paths]
    if not 1 <= len(paths) <= rig.MAX_CONDITION_VIEWS:
        raise MVDPPError(errors.BAD_INPUT, f"{len(paths)} images given; MVD++ takes 1 to {rig.MAX_CONDITION_VIEWS}",
                         "Pass between 1 and 10 reference images of one object.")
    return paths


def check_files(paths) -> list[Path]:
    """Check the count and that every file is a readable image, without the masking work."""
    paths = check_input_count(paths)
    for path in paths:
        read_image(path)
    return paths


def load_inputs(paths, resolution: int, progress: Callable[[str, int, int], None] | None = None,
                segmenters: dict[str, Segmenter] | None = None) -> list[NormalisedInput]:
    """Read, mask and frame every input; the first problem raises an MVDPPError naming its file."""
    paths = check_input_count(paths)
    inputs = []
    for number, path in enumerate(paths, start=1):
        inputs.append(load_input(path, resolution, segmenters))
        if progress is not None:
            progress("load_inputs", number, len(paths))
    return inputs
