"""Fixed evaluation sets: one folder per object, laid out like a result folder (mvdpp.result).

::

    OUT/evalset.json                      the set's parameters (shards check they agree)
    OUT/object_0000000042/
        views/view_00.png .. view_31.png  ground-truth rig views (RGBA over white, alpha = mask)
        cameras.json                      their cameras (mvdpp.result.cameras_document)
        inputs/input_00.png ..            the input (condition) views; input 0 is at azimuth 0
        inputs_cameras.json               their cameras, same format, "image" = inputs/input_XX.png
        mesh.glb                          the ground-truth mesh (vertex colours), normalised; glTF
                                          is +Y up: read it with mvdpp.data.assets.load_asset
                                          (back to the rig's Z-up frame) or Blender's importer
        meta.json                         seed, source, size, lighting, version

``mvdpp reconstruct`` and the evaluation read these folders directly. Procedural objects use
evaluation seeds (< 2**31; training never does, see mvdpp.data.seeds). Each object folder is
written atomically (mvdpp.result.ResultWriter), so an interrupted job leaves only complete
folders and a rerun skips them.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import BAD_INPUT, OUTPUT_EXISTS, MVDPPError
from ..result import (
    CAMERAS_FILE,
    CAMERAS_FORMAT,
    FORMAT_VERSION,
    MESH_FILE,
    META_FILE,
    META_FORMAT,
    ResultWriter,
    cameras_document,
    input_filename,
    view_filename,
)
from ..rig import MAX_CONDITION_VIEWS, Camera, rig_cameras, sample_input_camera
from .assets import save_asset
from .procedural import DEFAULT_DETAIL
from .render import RENDER_REVISION, Lighting, Renderer
from .seeds import EVAL_SEED_END

EVALSET_FILE = "evalset.json"
EVALSET_FORMAT = "mvdpp-evalset"
INPUT_CAMERAS_FILE = "inputs_cameras.json"
_EVAL_SALT = 0x6576616C


def object_folder_name(object_id: int) -> str:
    return f"object_{object_id:010d}"


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' (1 <= K <= N) -> (K, N)."""
    try:
        k, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise MVDPPError(BAD_INPUT, f"shard {text!r} is not of the form K/N", "e.g. --shard 3/8 for the third of eight parts") from None
    if not 1 <= k <= n:
        raise MVDPPError(BAD_INPUT, f"shard {text!r} needs 1 <= K <= N", "shards are numbered from 1, e.g. 1/4 .. 4/4")
    return k, n


def input_cameras(rng: np.random.Generator, count: int) -> list[Camera]:
    """Input cameras of one evaluation object: the first at azimuth 0 (it defines the rig's frame)."""
    return [sample_input_camera(rng, azimuth_deg=0.0)] + [sample_input_camera(rng) for _ in range(count - 1)]


def input_cameras_document(cameras: list[Camera], size: int) -> dict:
    views = []
    for i, camera in enumerate(cameras):
        entry = camera.to_dict()
        entry["image"] = input_filename(i)
        views.append(entry)
    return {"format": CAMERAS_FORMAT, "version": FORMAT_VERSION, "convention": "blender-camera",
            "image_size": [size, size], "views": views}


def read_input_cameras(folder: str | os.PathLike) -> list[Camera]:
    """The input cameras of an evaluation object folder, in input order."""
    doc = json.loads((Path(folder) / INPUT_CAMERAS_FILE).read_text(encoding="utf-8"))
    return [Camera.from_dict(entry) for entry in doc["views"]]


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array, mode="RGBA").save(path)


def write_object(out: Path, mesh, object_id: int, source: str, size: int, num_inputs: int, renderer: Renderer) -> Path:
    """Render one object and write its folder atomically; returns the folder."""
    rng = np.random.default_rng([object_id, _EVAL_SALT])
    lighting = Lighting.random(rng)
    inputs = input_cameras(rng, num_inputs)
    rig = rig_cameras()
    images = renderer.render(mesh, rig + inputs, lighting=lighting)
    target = out / object_folder_name(object_id)
    with ResultWriter(target) as writer:
        for camera, image in zip(rig, images[: len(rig)]):
            _save_png(image, writer.path(view_filename(camera.index)))
        for i, image in enumerate(images[len(rig) :]):
            _save_png(image, writer.path(input_filename(i)))
        writer.write_json(CAMERAS_FILE, cameras_document(rig, (size, size)))
        writer.write_json(INPUT_CAMERAS_FILE, input_cameras_document(inputs, size))
        save_asset(mesh, writer.path(MESH_FILE))
        writer.write_json(META_FILE, {
            "format": META_FORMAT,
            "version": FORMAT_VERSION,
            "kind": "evaluation-object",
            "object_seed": int(object_id),
            "source": source,
            "image_size": [size, size],
            "num_inputs": num_inputs,
            "lighting": asdict(lighting),
            "mvdpp_version": __version__,
        })
        return writer.commit()


def _check_parameters(out: Path, parameters: dict) -> None:
    """Write OUT/evalset.json, or check that an existing one has the same parameters."""
    path = out / EVALSET_FILE
    if path.is_file():
        existing = json.loads(path.read_text(encoding="utf-8"))
        if existing != parameters:
            differing = sorted(k for k in set(existing) | set(parameters) if existing.get(k) != parameters.get(k))
            raise MVDPPError(
                OUTPUT_EXISTS,
                f"{out} holds an evaluation set made with other settings ({', '.join(differing)})",
                "choose another output folder or rerun with the same settings",
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    temp = out / f".{EVALSET_FILE}.{uuid.uuid4().hex[:8]}"
    temp.write_text(json.dumps(parameters, indent=2), encoding="utf-8")
    os.replace(temp, path)  # shards racing here write identical content


def make_evalset(
    out: str | os.PathLike,
    count: int,
    first_seed: int = 0,
    size: int = 256,
    num_inputs: int = 1,
    shard: tuple[int, int] = (1, 1),
    assets: str | os.PathLike | None = None,
    detail: float = DEFAULT_DETAIL,
    progress=None,
) -> dict:
    """Write this shard's objects of an evaluation set; returns counts {"written", "skipped"}.

    Objects are ``first_seed .. first_seed + count - 1`` (procedural seeds, or positions in the
    asset folder's sorted file list); shard K/N takes every N-th object starting at the K-th.
    ``progress(done, total, folder, skipped)`` is called after each object of this shard.
    """
    from .sources import AssetSource, ProceduralSource

    if count < 1 or first_seed < 0:
        raise MVDPPError(BAD_INPUT, "--count must be >= 1 and --first-seed >= 0", "e.g. --count 100 --first-seed 0")
    if not 1 <= num_inputs <= MAX_CONDITION_VIEWS:
        raise MVDPPError(BAD_INPUT, f"{num_inputs} input views is not in 1..{MAX_CONDITION_VIEWS}", "pass --inputs 1 to 10")
    source = AssetSource(assets, shuffle=False) if assets is not None else ProceduralSource(detail=detail, training=False)
    if assets is None and first_seed + count > EVAL_SEED_END:
        raise MVDPPError(BAD_INPUT, f"evaluation seeds must stay below {EVAL_SEED_END} (training uses the rest)",
                         "lower --first-seed or --count")
    if assets is not None and first_seed + count > len(source.files):
        raise MVDPPError(BAD_INPUT, f"{assets} has {len(source.files)} assets, fewer than --first-seed + --count",
                         "lower --count or --first-seed")
    k, n = shard
    out = Path(out)
    _check_parameters(out, {
        "format": EVALSET_FORMAT, "version": 1, "source": source.describe(), "first_seed": first_seed,
        "count": count, "image_size": size, "num_inputs": num_inputs,
        "detail": detail if assets is None else None, "renderer_revision": RENDER_REVISION,
    })
    mine = [first_seed + i for i in range(count) if i % n == k - 1]
    renderer = Renderer(size)
    counts = {"written": 0, "skipped": 0}
    try:
        for done, object_id in enumerate(mine, start=1):
            folder = out / object_folder_name(object_id)
            skipped = folder.exists()
            if not skipped:
                mesh, _ = source.get(object_id)
                write_object(out, mesh, object_id, source.describe(), size, num_inputs, renderer)
            counts["skipped" if skipped else "written"] += 1
            if progress is not None:
                progress(done, len(mine), folder, skipped)
    finally:
        renderer.release()
    return counts
