"""Do two machines' OpenGL drivers render the same views? (e.g. NVIDIA's EGL against llvmpipe)

    python tools/compare_gl_renders.py save views_gpu.npz --seed 0     # on one machine
    python tools/compare_gl_renders.py save views_cpu.npz --seed 0     # on the other
    python tools/compare_gl_renders.py compare views_gpu.npz views_cpu.npz

``save`` writes the 32 rig views (256 px, the data renderer's default lighting) of procedural
evaluation object ``--seed`` with the GL renderer's name; ``compare`` prints the mean PSNR over
the views and how many pixels differ by more than 32 grey levels. Session 15 found NaN shading
this way (BENCHMARKS.md, "Reconstruction").
"""

from __future__ import annotations

import argparse

import numpy as np


def save(path: str, seed: int, size: int) -> None:
    from mvdpp.data.procedural import make_object
    from mvdpp.data.render import Renderer
    from mvdpp.rig import rig_cameras

    renderer = Renderer(size)
    views = renderer.render(make_object(seed), rig_cameras())
    np.savez_compressed(path, views=views, gl_renderer=renderer.gl_renderer, seed=seed)
    print(f"{path}: {len(views)} views of object {seed} by {renderer.gl_renderer}")


def compare(path_a: str, path_b: str) -> None:
    from mvdpp import metrics

    a, b = np.load(path_a), np.load(path_b)
    if int(a["seed"]) != int(b["seed"]) or a["views"].shape != b["views"].shape:
        raise SystemExit("the two files hold different objects or view sizes")
    psnr = np.mean([metrics.psnr(x, y) for x, y in zip(a["views"], b["views"])])
    far = (np.abs(a["views"].astype(int) - b["views"].astype(int))[..., :3].max(-1) > 32).sum()
    print(f"{a['gl_renderer']} vs {b['gl_renderer']}: mean PSNR {psnr:.1f} dB, {far} pixels differ by more than 32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=256)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = parser.parse_args()
    if args.command == "save":
        save(args.out, args.seed, args.size)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
