"""`mvdpp make-evalset OUT`: write a fixed evaluation set (see mvdpp.data.evalset)."""

from __future__ import annotations

HELP = "write a fixed evaluation set: per object the 32 ground-truth views, input views and the mesh"


def add_arguments(parser) -> None:
    parser.add_argument("out", help="output folder (one sub-folder per object)")
    parser.add_argument("--count", type=int, default=100, help="number of objects in the whole set (default 100)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first object: procedural seed, or index into the sorted asset list (default 0)")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    parser.add_argument("--inputs", type=int, default=1, help="input views per object, 1-10 (default 1)")
    parser.add_argument("--shard", default="1/1", help="K/N: write only the K-th of N interleaved parts (default 1/1)")
    parser.add_argument("--assets", default=None, help="folder of real assets (.obj/.glb/.gltf/.ply) instead of procedural objects")
    parser.add_argument("--detail", type=float, default=None,
                        help="procedural tessellation: longest triangle edge before normalisation (default 0.03)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def run(args) -> int:
    import time

    from ..data.evalset import make_evalset, parse_shard
    from ..data.procedural import DEFAULT_DETAIL

    shard = parse_shard(args.shard)
    start = time.perf_counter()

    def progress(done, total, folder, skipped):
        if not args.quiet:
            print(f"[{done}/{total}] {folder}{' (already there, skipped)' if skipped else ''}", flush=True)

    counts = make_evalset(args.out, count=args.count, first_seed=args.first_seed, size=args.size,
                          num_inputs=args.inputs, shard=shard, assets=args.assets, progress=progress,
                          detail=DEFAULT_DETAIL if args.detail is None else args.detail)
    print(f"shard {shard[0]}/{shard[1]}: wrote {counts['written']} objects, skipped {counts['skipped']} "
          f"in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0
