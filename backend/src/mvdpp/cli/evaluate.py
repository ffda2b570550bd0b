"""`mvdpp eval EVALSET_DIR`: score a checkpoint on a fixed evaluation set (docs/evaluation.md)."""

from __future__ import annotations

HELP = ("score a checkpoint on an evaluation set: views (PSNR, SSIM, LPIPS) and meshes (Chamfer, F-score, IoU) "
        "against ground truth, with the ground-truth-views and inputs-only baselines")


def add_arguments(parser) -> None:
    from ..protocol import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_RESCALE
    from ..rig import MAX_CONDITION_VIEWS
    from ..service.job import DEVICES, MESH_QUALITIES, SCHEDULERS

    parser.add_argument("evalset", metavar="EVALSET_DIR", help="folder written by `mvdpp make-evalset`")
    parser.add_argument("--checkpoint", metavar="DIR", help="pipeline folder (default: the embedded model)")
    parser.add_argument("--inputs", type=int, nargs="+", default=[1, 4], metavar="N",
                        help=f"numbers of input views to evaluate, each 1-{MAX_CONDITION_VIEWS} (default: 1 4)")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                        help=f"classifier-free guidance scale (default {DEFAULT_GUIDANCE})")
    parser.add_argument("--guidance-rescale", type=float, default=DEFAULT_GUIDANCE_RESCALE,
                        help="0-1: bring each view's guided prediction back towards the conditional one's spread "
                             f"(Lin et al.; default {DEFAULT_GUIDANCE_RESCALE}, 0 = plain guidance)")
    parser.add_argument("--guidance-interval", type=float, nargs=2, default=[0.0, 1.0], metavar=("LOW", "HIGH"),
                        help="guide only the steps whose timestep / training timesteps lies in LOW..HIGH "
                             "(0 = clean, 1 = pure noise); the others take one conditional pass (default: 0 1, every step)")
    parser.add_argument("--scheduler", choices=tuple(SCHEDULERS), default=None, help="sampler (default: the checkpoint's own)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; each object's seed derives from it (default 0)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default: CUDA when available, else the CPU")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N objects")
    parser.add_argument("--out", default="eval-report", metavar="REPORT_DIR",
                        help="folder for report.json, report.md and the contact sheets (default ./eval-report)")
    parser.add_argument("--mesh-quality", choices=MESH_QUALITIES, default="auto",
                        help="reconstruction quality for every mesh (default auto: draft, the generate job's quality for generated views)")
    parser.add_argument("--mesh-grid", type=int, default=None, metavar="N",
                        help="override the reconstruction grid (voxels per side), e.g. 48 for a quick run")
    parser.add_argument("--surface-samples", type=int, default=None, metavar="N",
                        help="points sampled per surface for Chamfer and F-score (default 100000)")
    parser.add_argument("--iou-resolution", type=int, default=None, metavar="N",
                        help="voxels per side of the volume IoU grid (default 128)")
    parser.add_argument("--normalise-inputs", action="store_true",
                        help="re-frame the input renders as `mvdpp generate` frames user photos (default: feed them as rendered)")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS even when the lpips package is installed")
    parser.add_argument("--workers", default="auto",
                        help="processes scoring meshes and views beside the model (default auto: CPU cores - 4, at most 8; 0 = none)")
    parser.add_argument("--shard", default="1/1", metavar="K/N",
                        help="evaluate only the K-th of N interleaved parts into --out (no report files); "
                             "a final run without --shard writes the whole report from their records")
    parser.add_argument("--sheet-objects", type=int, default=4, help="objects per contact sheet (default 4)")
    parser.add_argument("--baselines-from", metavar="REPORT_DIR",
                        help="take the baselines (upper bound, inputs only) from an earlier evaluation of the same set "
                             "with the same mesh and scoring settings instead of reconstructing them again "
                             "(they do not depend on the checkpoint)")


def _check_arguments(args) -> None:
    from ..errors import BAD_INPUT, MVDPPError
    from ..protocol import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_RESCALE
    from ..rig import MAX_CONDITION_VIEWS

    def bad(message: str, hint: str) -> MVDPPError:
        return MVDPPError(BAD_INPUT, message, hint)

    if any(not 1 <= n <= MAX_CONDITION_VIEWS for n in args.inputs):
        raise bad(f"--inputs {' '.join(map(str, args.inputs))}: each must be 1 to {MAX_CONDITION_VIEWS}", "e.g. --inputs 1 4")
    if not 1 <= args.steps <= 1000:
        raise bad(f"--steps {args.steps} is not in 1..1000", "30 is a good default")
    if not 0 <= args.guidance <= 50:
        raise bad(f"--guidance {args.guidance} is not in 0..50", f"{DEFAULT_GUIDANCE} is a good default")
    if not 0 <= args.guidance_rescale <= 1:
        raise bad(f"--guidance-rescale {args.guidance_rescale} is not in 0..1",
                  f"0 turns it off; {DEFAULT_GUIDANCE_RESCALE} is the default")
    low, high = args.guidance_interval
    if not 0 <= low < high <= 1:
        raise bad(f"--guidance-interval {low:g} {high:g} is not an interval inside 0..1",
                  "give LOW HIGH with 0 <= LOW < HIGH <= 1, e.g. --guidance-interval 0.3 1")
    for name in ("mesh_grid", "surface_samples", "iou_resolution"):
        value = getattr(args, name)
        if value is not None and value < 8:
            raise bad(f"--{name.replace('_', '-')} {value} is too small", "leave it out for the default")
    if args.workers != "auto" and (not str(args.workers).isdigit() or int(args.workers) > 64):
        raise bad(f"--workers {args.workers} is not auto or a number of processes from 0 to 64", "e.g. --workers 8")
    if args.sheet_objects < 1:
        raise bad("--sheet-objects must be at least 1", "e.g. --sheet-objects 4")
    if args.baselines_from is not None:
        from pathlib import Path

        from ..evaluation.resume import OBJECTS_DIR

        if not (Path(args.baselines_from) / OBJECTS_DIR).is_dir():
            raise bad(f"--baselines-from {args.baselines_from}: no `{OBJECTS_DIR}/` folder there, so it is not the --out "
                      "folder of an earlier `mvdpp eval`", "pass the REPORT_DIR of an earlier evaluation, or leave it out")


def run(args) -> int:
    from ..evaluation.evalset_reader import find_objects

    from ..data.evalset import parse_shard

    _check_arguments(args)
    shard = parse_shard(args.shard)
    input_counts = sorted(set(args.inputs))
    # A bad evaluation folder is reported before the (slow) model load.
    find_objects(args.evalset, args.limit, needed_inputs=max(input_counts))

    import os

    from ..evaluation.runner import scoring_pool
    from ..service.job import load_pipeline

    workers = max(0, min(8, (os.cpu_count() or 1) - 4)) if args.workers == "auto" else int(args.workers)
    pool = scoring_pool(workers)  # before the model loads: the forked workers carry no torch state
    try:
        return _evaluate(args, input_counts, pool, load_pipeline, shard)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _evaluate(args, input_counts, pool, load_pipeline, shard) -> int:
    from pathlib import Path

    from ..evaluation.baselines import MeshSettings
    from ..evaluation.report import markdown_table
    from ..evaluation.runner import EvalSettings, evaluate
    from ..metrics import DEFAULT_IOU_RESOLUTION, DEFAULT_SURFACE_SAMPLES
    from ..recon.settings import AUTO_QUALITY_FOR_GENERATED

    pipe, folder, device = load_pipeline(args.checkpoint, args.device)
    settings = EvalSettings(
        input_counts=input_counts, steps=args.steps, guidance=args.guidance, guidance_rescale=args.guidance_rescale,
        guidance_interval=tuple(float(v) for v in args.guidance_interval), seed=args.seed, scheduler=args.scheduler,
        normalise_inputs=args.normalise_inputs,
        # "auto" resolved here so that the report (and the resume key) name the quality used: the
        # one the generate job uses for generated views, on every row so that the rows compare
        mesh=MeshSettings(args.mesh_quality if args.mesh_quality != "auto" else AUTO_QUALITY_FOR_GENERATED,
                          device, {"grid_resolution": args.mesh_grid} if args.mesh_grid else {}),
        surface_samples=args.surface_samples or DEFAULT_SURFACE_SAMPLES,
        iou_resolution=args.iou_resolution or DEFAULT_IOU_RESOLUTION,
        lpips=not args.no_lpips, sheet_objects=args.sheet_objects,
    )
    report = evaluate(Path(args.evalset), pipe, Path(args.out), settings, limit=args.limit, checkpoint=str(folder),
                      device=device, pool=pool, shard=shard, baselines_from=args.baselines_from)
    print(markdown_table(report), end="")
    return 0 if report["objects"] else 1
