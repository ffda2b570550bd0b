"""Which reconstruction settings make the best meshes from the model's generated views?

Generates the 32 rig views of every object of an evaluation set once (as `mvdpp eval` does:
same seeds, same inputs) and keeps them in a cache folder, then reconstructs them under any
number of variants and scores the meshes against the ground-truth mesh with the evaluation's
own scoring (mvdpp.evaluation.scoring), so the figures compare with `mvdpp eval`'s (fewer
surface samples by default: 30k instead of 100k). docs/reconstruction.md, "Generated views",
has the table this produced.

A variant is a comma-separated list of tokens:

* ``key=value``: a reconstruction setting (a field of mvdpp.recon.ReconSettings), e.g.
  ``hull_tolerated_votes=8`` or ``stereo=false``;
* ``generated``: the preset for generated views (view_source="generated") instead of the
  plain quality preset ("rendered"); ``key=value`` tokens still apply on top;
* ``truth``: the object's 32 ground-truth views instead of the generated ones;
* ``cone``: no reconstruction: the silhouette cone(s) of the inputs (the evaluation's
  "inputs only" baseline for fewer than 4 inputs);
* ``inward=D``: after reconstruction, every vertex moved D (world units) inward along its
  normal: a probe of the visual hull's outward bias (docs/reconstruction.md, "Limitations").

    mvdpp make-evalset /tmp/tune --count 10 --first-seed 200 --size 256 --inputs 4
    PYTHONPATH=backend/src python tools/probe_recon_generated.py generate /tmp/tune /tmp/tune_views
    PYTHONPATH=backend/src python tools/probe_recon_generated.py score /tmp/tune /tmp/tune_views \\
        --out /tmp/tune.jsonl --variants hull_tolerated_votes=1 hull_tolerated_votes=8 cone truth
    PYTHONPATH=backend/src python tools/probe_recon_generated.py table /tmp/tune.jsonl --base hull_tolerated_votes=1

``score`` appends one JSON line per (object, variant) and skips pairs already in ``--out``, so
it resumes and several ``--shard K/N`` processes can share the work (give each its own
``--out`` and pass them all to ``table``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mvdpp.data.evalset import parse_shard
from mvdpp.protocol import DEFAULT_GUIDANCE

CACHE_SETTINGS = "settings.json"


def generate_cache(evalset, cache, checkpoint=None, device="cpu", inputs=1, steps=30, guidance=DEFAULT_GUIDANCE, seed=0,
                   limit=None, log=print) -> None:
    """Write ``cache/<object folder>.npy`` (uint8 (32, H, W, 4), rig order) for every object missing there."""
    from mvdpp.evaluation.evalset_reader import find_objects
    from mvdpp.evaluation.generation import generate_views, object_seed
    from mvdpp.service.job import load_pipeline

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    _, objects = find_objects(evalset, limit, needed_inputs=inputs)
    pipe, folder, device = load_pipeline(checkpoint, device)
    settings = {"checkpoint": str(folder), "inputs": inputs, "steps": steps, "guidance": guidance, "seed": seed}
    settings_path = cache / CACHE_SETTINGS
    if settings_path.exists() and json.loads(settings_path.read_text()) != settings:
        raise SystemExit(f"{cache} holds views generated with other settings ({settings_path}); use another folder")
    settings_path.write_text(json.dumps(settings, indent=1))
    for obj in objects:
        path = cache / f"{obj.folder.name}.npy"
        if path.exists():
            continue
        started = time.perf_counter()
        views = generate_views(pipe, obj.inputs(inputs), steps, guidance, object_seed(seed, obj.object_id, inputs))
        np.save(path, np.stack(views))
        log(f"{obj.folder.name}: 32 views in {time.perf_counter() - started:.1f} s")


def parse_variant(text: str) -> dict:
    """'generated,stereo=false' -> {"views": "generated", "view_source": "generated", "cone": False,
    "overrides": {"stereo": False}}."""
    variant = {"views": "generated", "view_source": "rendered", "cone": False, "inward": 0.0, "overrides": {}}
    for token in filter(None, (t.strip() for t in text.split(","))):
        if token == "truth":
            variant["views"] = "truth"
        elif token == "cone":
            variant["cone"] = True
        elif token == "generated":
            variant["view_source"] = "generated"
        elif token.startswith("inward="):
            variant["inward"] = float(token.split("=", 1)[1])
        elif "=" in token:
            key, value = token.split("=", 1)
            try:
                variant["overrides"][key] = json.loads(value)
            except json.JSONDecodeError:
                variant["overrides"][key] = value
        else:
            raise ValueError(f"unknown variant token {token!r} (use truth, cone, generated or key=value)")
    return variant


def mesh_of(obj, variant: dict, cache: Path, inputs: int, quality: str, device: str = "cpu"):
    """The MeshAttempt (mvdpp.evaluation.baselines) of one variant on one object."""
    from mvdpp.evaluation.baselines import MeshSettings, reconstruct_views, silhouette_baseline

    settings = MeshSettings(quality, device, dict(variant["overrides"]))
    if variant["cone"]:
        return silhouette_baseline(obj.inputs(inputs), obj.input_cameras[:inputs], settings)
    images = obj.views() if variant["views"] == "truth" else list(np.load(cache / f"{obj.folder.name}.npy"))
    attempt = reconstruct_views(images, obj.view_cameras, settings, view_source=variant["view_source"])
    if attempt.mesh is not None and variant["inward"]:
        move_inward(attempt.mesh, variant["inward"])
    return attempt


def move_inward(mesh, distance: float) -> None:
    """Move every vertex of ``mesh`` ``distance`` against its (outward) vertex normal, in place."""
    mesh.vertices = mesh.vertices - distance * np.asarray(mesh.vertex_normals)


def score(evalset, cache, variants: list[str], out, samples=30_000, iou_resolution=128, quality="draft",
          shard=(1, 1), log=print, device="cpu") -> list[dict]:
    """Reconstruct and score every (object, variant) pair not yet in ``out``; returns the new records."""
    from mvdpp.evaluation.evalset_reader import find_objects
    from mvdpp.evaluation.scoring import MeshReference, failed_mesh_scores, score_mesh

    cache, out = Path(cache), Path(out)
    parsed = {text: parse_variant(text) for text in variants}  # bad variants fail before any work
    settings_path = cache / CACHE_SETTINGS
    inputs = json.loads(settings_path.read_text())["inputs"] if settings_path.exists() else 1
    done = {(r["object"], r["variant"]) for r in read_records([out])} if out.exists() else set()
    _, objects = find_objects(evalset, None, needed_inputs=inputs)
    k, n = shard
    new = []
    for obj in objects[k - 1 :: n]:
        todo = [text for text in variants if (obj.folder.name, text) not in done]
        if not todo:
            continue
        reference = MeshReference.of(obj.mesh(), samples, iou_resolution)
        for text in todo:
            attempt = mesh_of(obj, parsed[text], cache, inputs, quality, device)
            scores = score_mesh(attempt.mesh, reference) if attempt.mesh is not None else failed_mesh_scores()
            record = {"object": obj.folder.name, "variant": text, **scores, "seconds": round(attempt.seconds, 2),
                      "error": attempt.error, "samples": samples, "quality": quality, "device": device}
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            new.append(record)
            log(json.dumps(record))
    return new


def read_records(paths) -> list[dict]:
    return [json.loads(line) for path in paths for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def summarise(records: list[dict], base: str | None = None) -> str:
    """Markdown: per variant (first-seen order) objects, failures, mean Chamfer (over the meshes
    that exist), IoU, F-score, seconds per object and, against ``base``, on how many shared
    objects its Chamfer is lower and its IoU higher."""
    by_variant: dict[str, dict[str, dict]] = defaultdict(dict)
    for record in records:
        by_variant[record["variant"]][record["object"]] = record
    lines = ["| variant | objects | failed | Chamfer | IoU | F-score | s/object |" + (f" vs {base}: Chamfer / IoU better |" if base else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if base else "")]
    for name, rows in by_variant.items():
        chamfers = [r["chamfer"] for r in rows.values() if r["chamfer"] is not None]
        cells = [name, str(len(rows)), str(len(rows) - len(chamfers)),
                 f"{np.mean(chamfers):.5f}" if chamfers else "-",
                 f"{np.mean([r['iou'] for r in rows.values()]):.3f}",
                 f"{np.mean([r['fscore'] for r in rows.values()]):.3f}",
                 f"{np.mean([r['seconds'] for r in rows.values()]):.1f}"]
        if base:
            other = by_variant.get(base, {})
            shared = sorted(set(rows) & set(other))
            lower = sum(rows[o]["chamfer"] is not None and (other[o]["chamfer"] is None or rows[o]["chamfer"] < other[o]["chamfer"])
                        for o in shared)
            higher = sum(rows[o]["iou"] > other[o]["iou"] for o in shared)
            cells.append(f"{lower}/{len(shared)} / {higher}/{len(shared)}" if name != base else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate and cache the 32 views of every object")
    gen.add_argument("evalset")
    gen.add_argument("cache")
    gen.add_argument("--checkpoint", default=None, help="pipeline folder (default: the embedded model)")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--inputs", type=int, default=1)
    gen.add_argument("--steps", type=int, default=30)
    gen.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    gen.add_argument("--seed", type=int, default=0, help="the evaluation's --seed (per-object seeds as mvdpp eval)")
    gen.add_argument("--limit", type=int, default=None)
    sc = commands.add_parser("score", help="reconstruct the cached views under variants and score the meshes")
    sc.add_argument("evalset")
    sc.add_argument("cache")
    sc.add_argument("--variants", nargs="+", required=True)
    sc.add_argument("--out", required=True, help="JSON-lines file (appended; pairs already there are skipped)")
    sc.add_argument("--samples", type=int, default=30_000, help="surface samples for Chamfer (mvdpp eval: 100000)")
    sc.add_argument("--iou-resolution", type=int, default=128)
    sc.add_argument("--quality", default="draft")
    sc.add_argument("--shard", default="1/1", help="K/N: every N-th object from the K-th")
    sc.add_argument("--device", default="cpu", help="where to reconstruct: cpu or cuda (scoring is on the CPU)")
    tb = commands.add_parser("table", help="markdown table of the means per variant")
    tb.add_argument("results", nargs="+")
    tb.add_argument("--base", default=None, help="variant to count per-object wins against")
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate_cache(args.evalset, args.cache, args.checkpoint, args.device, args.inputs, args.steps, args.guidance,
                       args.seed, args.limit)
    elif args.command == "score":
        score(args.evalset, args.cache, args.variants, args.out, args.samples, args.iou_resolution, args.quality,
              parse_shard(args.shard), device=args.device)
    else:
        print(summarise(read_records(args.results), args.base), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
