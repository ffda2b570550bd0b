"""evaluate(): the whole evaluation of one checkpoint on one evaluation set.

Per object, in a fixed order with fixed seeds (reruns give the same figures): the ground-truth
mesh is sampled once; the upper-bound mesh is reconstructed from the 32 ground-truth views; then
for each number of inputs N: the model generates the 32 rig views from the first N input views
(input 0 is at azimuth 0, so generated view i is comparable with ground-truth view i), the views
are scored, a mesh is reconstructed from them and scored, and the inputs-only baseline mesh is
reconstructed from the N input views and their cameras and scored.
"""

from __future__ import annotations

import datetime
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import metrics
from ..protocol import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_RESCALE
from ..recon.settings import GENERATED_VIEW_OVERRIDES, PRESETS
from .baselines import RECONSTRUCTION_MIN_VIEWS, MeshSettings, inputs_only, reconstruct_views, upper_bound
from .evalset_reader import find_objects
from .generation import generate_views, object_seed
from .contact_sheet import SHEET_VIEWS
from .resume import BaselineSource, ObjectStore, checkpoint_fingerprint
from .report import REPORT_FORMAT, compute_means, write_report
from .scoring import SCORE_SIZE, score_object

#: With a handful of views, a voxel seen as background by one of them must go: the hull's vote
#: tolerance (meant for one corrupted mask among 32) would otherwise carve nothing at all.
FEW_VIEWS_OVERRIDES = {"hull_tolerated_votes": 0}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class EvalSettings:
    input_counts: list[int] = field(default_factory=lambda: [1, 4])
    steps: int = 30
    guidance: float = DEFAULT_GUIDANCE
    guidance_rescale: float = DEFAULT_GUIDANCE_RESCALE
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # the part of the schedule that is guided
    seed: int = 0
    scheduler: str | None = None  # None: the checkpoint's own sampler
    normalise_inputs: bool = False  # re-frame inputs as `mvdpp generate` frames user photos
    mesh: MeshSettings = field(default_factory=MeshSettings)
    surface_samples: int = metrics.DEFAULT_SURFACE_SAMPLES
    iou_resolution: int = metrics.DEFAULT_IOU_RESOLUTION
    fscore_threshold: float = metrics.DEFAULT_FSCORE_THRESHOLD
    score_size: int = SCORE_SIZE
    lpips: bool = True
    sheet_objects: int = 4
    sheet_tile: int = 96

    def describe(self) -> dict:
        return {
            "input_counts": list(self.input_counts), "steps": self.steps, "guidance": self.guidance,
            "guidance_rescale": self.guidance_rescale, "guidance_interval": list(self.guidance_interval), "seed": self.seed,
            "scheduler": self.scheduler, "normalise_inputs": self.normalise_inputs, "mesh_quality": self.mesh.quality,
            "mesh_overrides": dict(self.mesh.overrides), "generated_view_overrides": dict(GENERATED_VIEW_OVERRIDES),
            # the presets' fields, not only the name: a changed preset must not reuse old baselines
            "mesh_presets": {name: asdict(preset) for name, preset in PRESETS.items()},
            "few_views_overrides": dict(FEW_VIEWS_OVERRIDES),
            "surface_samples": self.surface_samples,
            "iou_resolution": self.iou_resolution, "fscore_threshold": self.fscore_threshold,
            "score_size": self.score_size,
        }


def _mesh_record(attempt) -> dict:
    return {"mesh": None, "mesh_error": attempt.error, "mesh_seconds": round(attempt.seconds, 3)}


def _fill_scores(record: dict, scores: dict) -> None:
    """Scores into the record; baselines reused from an earlier run are not in ``scores`` and
    keep their figures."""
    meshes = scores["meshes"]
    if "upper_bound" in meshes:
        record["upper_bound"]["mesh"] = meshes["upper_bound"]
    for count, run in record["runs"].items():
        run["views"] = scores["views"][count]
        run["mesh"] = meshes[count]
        if f"{count}/inputs_only" in meshes:
            run["inputs_only"]["mesh"] = meshes[f"{count}/inputs_only"]


def _summary(record: dict) -> str:
    runs = ", ".join(f"{n} in: PSNR {r['views']['psnr']:.2f} IoU {r['mesh']['iou']:.3f} "
                     f"(inputs only {r['inputs_only']['mesh']['iou']:.3f})" for n, r in record["runs"].items())
    return f"{record['folder']}: upper bound IoU {record['upper_bound']['mesh']['iou']:.3f}; {runs}"


def evaluate(evalset_dir, pipe, out, settings: EvalSettings | None = None, limit: int | None = None,
             checkpoint: str = "", device: str = "cpu", progress=_stderr, pool=None, shard: tuple[int, int] = (1, 1),
             baselines_from=None) -> dict:
    """Run the evaluation; writes report.json, report.md and contact_sheet_<N>in.png into ``out``
    and returns the report dict (mvdpp.evaluation.report describes it).

    pool: an optional concurrent.futures executor of worker processes; the scoring (CPU work:
    surface sampling, voxel grids, SSIM) of one object then runs there while the next object is
    generated and reconstructed. The figures are the same with and without it.

    shard (K, N): evaluate only every N-th object from the K-th, keeping their records in
    ``out/objects`` but writing no report files; several shards can share one ``out`` (e.g. one
    process each on a GPU), and a final unsharded run with the same settings reuses all their
    records and writes the report of the whole set.

    baselines_from: an earlier evaluation's report folder; objects it scored with the same
    evaluation set and mesh and scoring settings take their baselines (upper bound, inputs
    only) from it instead of reconstructing them again (their records say so), the others are
    computed as usual.
    """
    from .contact_sheet import make_contact_sheet

    settings = settings or EvalSettings()
    started, clock = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    parameters, objects = find_objects(evalset_dir, limit, needed_inputs=max(settings.input_counts))
    k, n = shard
    objects = objects[k - 1 :: n]
    sharded = n > 1
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    few_view_mesh = MeshSettings(settings.mesh.quality, settings.mesh.device, {**settings.mesh.overrides, **FEW_VIEWS_OVERRIDES})
    stage_seconds = {"generate": 0.0, "reconstruct": 0.0, "score_wait": 0.0}
    sheet_rows: dict[str, list[dict]] = {str(count): [] for count in settings.input_counts}
    records: list[dict] = []
    pending: list = []  # (record, future) in object order
    store = ObjectStore(out, {"settings": settings.describe(), "evalset": parameters,
                              "checkpoint": checkpoint_fingerprint(checkpoint), "evaluation_version": 1})
    baselines = None if baselines_from is None else BaselineSource(baselines_from, store.key)
    lpips_notes: set[str] = set()
    scored = [0]

    def collect(block_until: int) -> None:
        """Fill in scores of finished objects, waiting while more than ``block_until`` are pending."""
        while pending and (len(pending) > block_until or pending[0][1].done()):
            record, future = pending.pop(0)
            t0 = time.perf_counter()
            scores = future.result()
            stage_seconds["score_wait"] += time.perf_counter() - t0
            _fill_scores(record, scores)
            store.save(record)
            if scores["lpips_note"]:
                lpips_notes.add(scores["lpips_note"])
            scored[0] += 1
            progress(f"[{scored[0]}/{len(objects)}] {_summary(record)} ({time.perf_counter() - clock:.0f} s)")

    progress(f"mvdpp eval: {len(objects)} objects x inputs {settings.input_counts} from {evalset_dir} on {device}"
             f"{f', scoring in {pool._max_workers} worker processes' if pool is not None else ''}")
    for obj in objects:
        cached = store.load(obj.folder.name)
        if cached is not None:
            records.append(cached)
            for key, rows in sheet_rows.items():
                views = store.load_sheet_views(obj.folder.name, int(key), SHEET_VIEWS)
                if len(rows) < settings.sheet_objects and views is not None:
                    rows.append({"label": obj.folder.name, "inputs": obj.inputs(int(key)), "generated": views,
                                 "truth": obj.views()})
            scored[0] += 1
            progress(f"[{scored[0]}/{len(objects)}] {_summary(cached)} (kept from an earlier run)")
            continue
        reused = None if baselines is None else baselines.load(obj.folder.name, settings.input_counts)
        record = {"object_id": obj.object_id, "folder": obj.folder.name, "source": obj.source, "runs": {}}
        task_meshes = {}
        if reused is None:
            attempt = upper_bound(obj, settings.mesh)
            stage_seconds["reconstruct"] += attempt.seconds
            record["upper_bound"], task_meshes["upper_bound"] = _mesh_record(attempt), attempt.mesh
        else:
            record["upper_bound"] = dict(reused["upper_bound"])
            record["baselines_reused_from"] = str(baselines_from)
        task = {"mesh_path": str(obj.mesh_path), "view_paths": [str(p) for p in obj.view_paths],
                "meshes": task_meshes, "views": {}, "samples": settings.surface_samples,
                "iou_resolution": settings.iou_resolution, "fscore_threshold": settings.fscore_threshold,
                "score_size": settings.score_size, "lpips": settings.lpips}
        for count in settings.input_counts:
            run_clock = time.perf_counter()
            seed = object_seed(settings.seed, obj.object_id, count)
            inputs = obj.inputs(count)
            generated = generate_views(pipe, inputs, settings.steps, settings.guidance, seed, settings.scheduler,
                                       settings.normalise_inputs, settings.guidance_rescale, settings.guidance_interval)
            stage_seconds["generate"] += time.perf_counter() - run_clock
            generated_mesh = reconstruct_views(generated, obj.view_cameras, settings.mesh, view_source="generated")
            stage_seconds["reconstruct"] += generated_mesh.seconds
            key = str(count)
            task["meshes"][key] = generated_mesh.mesh
            task["views"][key] = generated
            if reused is None:
                baseline_mesh = inputs_only(obj, count, few_view_mesh)
                stage_seconds["reconstruct"] += baseline_mesh.seconds
                task["meshes"][f"{key}/inputs_only"] = baseline_mesh.mesh
                baseline = _mesh_record(baseline_mesh)
                baseline["method"] = "reconstruction" if count >= RECONSTRUCTION_MIN_VIEWS else "silhouette hull"
            else:
                baseline = dict(reused["inputs_only"][key])
            record["runs"][key] = {"seed": seed, "views": None, **_mesh_record(generated_mesh), "inputs_only": baseline,
                                   "seconds": round(time.perf_counter() - run_clock, 3)}
            if len(sheet_rows[key]) < settings.sheet_objects:
                sheet_views = {i: generated[i] for i in SHEET_VIEWS}
                store.save_sheet_views(obj.folder.name, count, sheet_views)
                sheet_rows[key].append({"label": obj.folder.name, "inputs": inputs, "generated": sheet_views,
                                        "truth": obj.views()})
        records.append(record)
        if pool is None:
            t0 = time.perf_counter()
            pending.append((record, _Done(score_object(task))))
            stage_seconds["score_wait"] += time.perf_counter() - t0
        else:
            pending.append((record, pool.submit(score_object, task)))
        collect(block_until=2 * pool._max_workers if pool is not None else 0)  # bounded memory
    collect(block_until=0)

    sheets = {}
    for count, rows in ([] if sharded else sheet_rows.items()):
        path = out / f"contact_sheet_{count}in.png"
        make_contact_sheet(rows, settings.sheet_tile).save(path)
        sheets[count] = path.name
    notes = []
    reused_count = sum("baselines_reused_from" in r for r in records)
    if reused_count:
        sources = ", ".join(sorted({r["baselines_reused_from"] for r in records if "baselines_reused_from" in r}))
        notes.append(f"Baselines (upper bound, inputs only) of {reused_count} of {len(records)} objects reused from "
                     f"{sources} (same evaluation set, mesh and scoring settings; they do not depend on the checkpoint)")
    if settings.lpips and all(r["runs"][k]["views"]["lpips"] is None for r in records for k in r["runs"]):
        notes.append(next(iter(sorted(lpips_notes)), "LPIPS unavailable (install the lpips package and its weights)"))
    report = {
        "format": REPORT_FORMAT, "version": 1, "created": started.isoformat(timespec="seconds"),
        "evalset": str(evalset_dir), "evalset_parameters": parameters, "checkpoint": str(checkpoint), "device": device,
        "settings": settings.describe(), "versions": _versions(),
        "seconds": round(time.perf_counter() - clock, 1), "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
        "shard": f"{k}/{n}", "contact_sheets": sheets, "notes": notes, "objects": records,
        "means": compute_means(records, settings.input_counts),
    }
    if sharded:
        progress(f"mvdpp eval: shard {k}/{n}: {len(records)} objects kept in {out / 'objects'} in {report['seconds']:.0f} s; "
                 "rerun without --shard (same settings) for the report of the whole set")
    else:
        json_path, md_path = write_report(report, out)
        progress(f"mvdpp eval: wrote {json_path}, {md_path} and {len(sheets)} contact sheet(s) in {report['seconds']:.0f} s")
    return report


class _Done:
    """A finished result with the Future interface collect() uses (scoring without workers)."""

    def __init__(self, value):
        self.value = value

    def done(self) -> bool:
        return True

    def result(self):
        return self.value


def scoring_pool(workers: int):
    """A pool of ``workers`` scoring processes (None for 0), started now: create it before the
    model is loaded so the forked workers carry no torch threads or CUDA state."""
    if workers <= 0:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    for future in [pool.submit(_warm_up) for _ in range(workers)]:
        future.result()
    return pool


def _warm_up() -> None:
    from . import scoring  # noqa: F401 - import the scoring stack once per worker


def _versions() -> dict:
    from ..service.job import versions

    return versions()
