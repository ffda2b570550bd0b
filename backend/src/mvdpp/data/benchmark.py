"""`mvdpp bench render`: renderer throughput on procedural objects (figures for BENCHMARKS.md).

Objects are generated first (their CPU cost is reported separately); then every object's views
are rendered with one ``Renderer.render`` call, as the training stream and evaluation sets do.
Two figures per resolution:

* end to end: mesh preparation (normals, colours) + upload + draw + read-back to numpy;
* prepared: the same with mesh arrays prepared beforehand (upload + draw + read-back only).

``--stream B`` also times the training stream in this one process (object generation included),
which is what one DataLoader worker delivers.
"""

from __future__ import annotations

import json
import time

HELP = "renderer throughput: views/s at given resolutions on procedural objects"


def add_arguments(parser) -> None:
    parser.add_argument("--size", type=int, nargs="+", default=[256], help="resolutions to measure (default 256)")
    parser.add_argument("--objects", type=int, default=16, help="procedural objects (default 16)")
    parser.add_argument("--views", type=int, default=40, help="views per object and render call (default 40: 32 rig + 8 inputs)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the objects per measurement (default 3)")
    parser.add_argument("--samples", type=int, default=4, help="multisampling (default 4; 0 = off)")
    parser.add_argument("--first-seed", type=int, default=2**31, help="first procedural seed (default: the first training seed)")
    parser.add_argument("--stream", type=int, default=0, metavar="B",
                        help="also time MultiViewStream batches of B objects at the first size (0 = skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per measurement as well")


def _views(count: int):
    import numpy as np

    from ..rig import rig_cameras, sample_input_camera

    rng = np.random.default_rng(0)
    cameras = rig_cameras()
    while len(cameras) < count:
        cameras.append(sample_input_camera(rng))
    return cameras[:count]


def run(args) -> int:
    import numpy as np

    from .procedural import make_object
    from .render import Lighting, Renderer, mesh_parts

    start = time.perf_counter()
    meshes = [make_object(args.first_seed + i) for i in range(args.objects)]
    generation = (time.perf_counter() - start) / args.objects
    triangles = np.array([len(m.faces) for m in meshes])
    cameras = _views(args.views)
    lighting = Lighting()
    records = []
    print(f"objects: {args.objects} procedural (seeds {args.first_seed}..{args.first_seed + args.objects - 1}), "
          f"triangles per object: mean {triangles.mean():,.0f} (min {triangles.min():,}, max {triangles.max():,})")
    print(f"object generation (CPU, not in the figures below): {generation * 1000:.0f} ms/object")
    start = time.perf_counter()
    prepared = [mesh_parts(m) for m in meshes]
    preparation = (time.perf_counter() - start) / args.objects
    print(f"mesh preparation (normals, colours; CPU): {preparation * 1000:.1f} ms/object")
    for size in args.size:
        renderer = Renderer(size, samples=args.samples)
        renderer.render(meshes[0], cameras, lighting)  # context, shaders, framebuffers
        if size == args.size[0]:
            print(f"GL renderer: {renderer.gl_renderer} | {renderer.ctx.info['GL_VERSION']}")
        for label, items in (("end to end", meshes), ("prepared", prepared)):
            start = time.perf_counter()
            for _ in range(args.repeats):
                for item in items:
                    renderer.render(item, cameras, lighting)
            elapsed = time.perf_counter() - start
            views = args.repeats * len(items) * len(cameras)
            record = {"target": "render", "mode": label, "size": size, "samples": renderer._samples,
                      "views_per_call": len(cameras), "views_per_s": views / elapsed,
                      "mean_triangles": float(triangles.mean()), "gl_renderer": renderer.gl_renderer}
            records.append(record)
            print(f"{size}x{size} px, MSAA {renderer._samples}x, {len(cameras)} views/call, {label}: "
                  f"{views} views in {elapsed:.2f} s -> {views / elapsed:,.0f} views/s")
        renderer.release()
    if args.stream:
        from .stream import MultiViewStream

        stream = MultiViewStream(batch_size=args.stream, size=args.size[0], samples=args.samples, seed=0)
        stream.make_batch(0)
        batches = max(2, args.objects // args.stream)
        start = time.perf_counter()
        for b in range(1, batches + 1):
            stream.make_batch(b)
        elapsed = time.perf_counter() - start
        objects = batches * args.stream
        record = {"target": "render", "mode": "stream", "size": args.size[0], "objects_per_s": objects / elapsed,
                  "batch_size": args.stream}
        records.append(record)
        print(f"training stream, one process, {args.size[0]} px, batches of {args.stream} (mixed 1-10 inputs + 8 views, "
              f"generation included): {objects / elapsed:.1f} objects/s")
    if args.json:
        for record in records:
            print(json.dumps(record))
    return 0
