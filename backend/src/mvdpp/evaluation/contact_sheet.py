"""One PNG per run: for each of a few objects three rows, inputs / generated / ground truth.

Layout (all tiles square, ``tile`` px): a label column one tile wide, then SHEET_COLUMNS tiles.
The generated and ground-truth rows show the rig views of SHEET_VIEWS (the 8 azimuths at 30
degrees elevation, azimuth 0 first); the inputs row shows the inputs used, left-aligned. So a
sheet of N objects is ``(SHEET_COLUMNS + 1) * tile`` wide and ``3 * N * tile`` high.
"""

from __future__ import annotations

import numpy as np

from ..rig import RIG_AZIMUTHS_DEG, RIG_ELEVATIONS_DEG

#: rig indices shown: elevation 30 degrees, azimuths 0, 45, .. 315 (index = 8 * elevation + azimuth)
SHEET_VIEWS = tuple(8 * RIG_ELEVATIONS_DEG.index(30.0) + a for a in range(len(RIG_AZIMUTHS_DEG)))
SHEET_COLUMNS = len(SHEET_VIEWS)
ROW_LABELS = ("inputs", "generated", "truth")


def sheet_size(num_objects: int, tile: int) -> tuple[int, int]:
    """(width, height) in pixels of a sheet of ``num_objects`` objects."""
    return (SHEET_COLUMNS + 1) * tile, len(ROW_LABELS) * num_objects * tile


def _tile(image: np.ndarray, tile: int):
    from PIL import Image

    from .scoring import on_white

    return Image.fromarray(on_white(image, tile), "RGB")


def make_contact_sheet(rows: list[dict], tile: int = 96):
    """rows: one dict per object with "label", "inputs", "generated", "truth" (lists of RGBA
    arrays; generated/truth indexed by rig view). Returns a PIL RGB image."""
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("a contact sheet needs at least one object")
    sheet = Image.new("RGB", sheet_size(len(rows), tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for number, row in enumerate(rows):
        top = len(ROW_LABELS) * number * tile
        strips = (row["inputs"][:SHEET_COLUMNS], [row["generated"][i] for i in SHEET_VIEWS],
                  [row["truth"][i] for i in SHEET_VIEWS])
        for r, (label, images) in enumerate(zip(ROW_LABELS, strips)):
            y = top + r * tile
            draw.text((4, y + 4), label, fill=(0, 0, 0))
            if r == 0:
                draw.text((4, y + 18), str(row["label"]), fill=(90, 90, 90))
            for c, image in enumerate(images):
                sheet.paste(_tile(image, tile), ((c + 1) * tile, y))
        draw.line([(0, top), (sheet.width, top)], fill=(160, 160, 160))
    return sheet
