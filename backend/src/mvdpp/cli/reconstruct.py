"""`mvdpp reconstruct VIEWS_DIR --out mesh.glb`: a result folder's 32 views -> a coloured mesh."""

from __future__ import annotations

import sys

HELP = "reconstruct a coloured mesh (GLB/OBJ/PLY) from a result folder's views"


def add_arguments(parser) -> None:
    parser.add_argument("views_dir", metavar="VIEWS_DIR", help="a result folder (with views/ and cameras.json)")
    parser.add_argument("--out", required=True, help="output mesh path: .glb, .obj or .ply")
    parser.add_argument("--quality", default="auto", choices=["auto", "draft", "standard", "high"],
                        help="grid size and effort (auto: draft for --views generated; for rendered views standard on a GPU, draft on the CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--resolution", type=int, default=None,
                        help="grid nodes per side, overriding the quality's (16k + 1 is fastest, e.g. 161, 257)")
    parser.add_argument("--views", default="generated", choices=["generated", "rendered"],
                        help="where the views come from: generated (the model's views, default: a visual hull "
                             "that tolerates their small disagreements) or rendered (exact renders)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args) -> int:
    from ..recon.export import reconstruct_folder

    def progress(stage: str, step: int, total: int) -> None:
        if not args.quiet:
            print(f"\r{stage}: {step}/{total}   ", end="", file=sys.stderr, flush=True)

    timings: dict = {}
    mesh = reconstruct_folder(args.views_dir, args.out, quality=args.quality, device=args.device,
                              progress=progress, timings=timings, view_source=args.views,
                              grid_resolution=args.resolution)
    if not args.quiet:
        print(file=sys.stderr)
        print(f"wrote {args.out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces "
              f"in {timings.get('total_s', 0.0):.1f} s")
    return 0
