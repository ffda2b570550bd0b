"""`mvdpp generate`: reference images -> a result folder (32 views, cameras, mesh, inputs, meta)."""

from __future__ import annotations

import sys
import time

HELP = "turn 1-10 reference images of an object into 32 views and a mesh (a result folder)"


def add_arguments(parser) -> None:
    from ..service.job import DEVICES, MESH_QUALITIES, SCHEDULERS, GenerateSettings

    defaults = GenerateSettings()
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="1 to 10 images of one object (PNG, JPEG, WebP, TIFF, BMP); the first sets the front")
    parser.add_argument("--out", required=True, metavar="DIR", help="result folder to create")
    parser.add_argument("--checkpoint", metavar="DIR", help="pipeline folder (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"denoising steps (default {defaults.steps})")
    parser.add_argument("--guidance", type=float, default=defaults.guidance,
                        help=f"classifier-free guidance scale (default {defaults.guidance})")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, recorded in meta.json)")
    parser.add_argument("--scheduler", choices=tuple(SCHEDULERS), default=defaults.scheduler,
                        help="sampler (default: the checkpoint's own)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default: CUDA when available, else the CPU")
    parser.add_argument("--no-mesh", action="store_true", help="skip the mesh reconstruction")
    parser.add_argument("--mesh-quality", choices=MESH_QUALITIES, default=defaults.mesh_quality,
                        help="reconstruction quality (default auto: standard on CUDA, draft on the CPU)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument("--low-vram", action="store_true",
                        help="use less GPU memory, more slowly (sequential guidance, chunked VAE, CPU offload)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class ProgressBar:
    """One line per stage on stderr: a bar redrawn in place on a terminal, a line per stage otherwise."""

    def __init__(self, stream=sys.stderr, enabled: bool = True):
        from ..service.progress import ProgressClock

        self.stream = stream
        self.enabled = enabled
        self.interactive = enabled and getattr(stream, "isatty", lambda: False)()
        self.clock = ProgressClock()
        self.stage = None
        self._last_draw = 0.0

    def __call__(self, stage: str, step: int, total: int) -> None:
        update = self.clock.update(stage, step, total)
        if not self.enabled:
            return
        if stage != self.stage:
            if self.stage is not None and self.interactive:
                self.stream.write("\n")
            self.stage = stage
        now = time.monotonic()
        done = step >= total
        if self.interactive and (done or now - self._last_draw > 0.1):
            width = 30
            filled = int(width * step / max(total, 1))
            eta = f" eta {update.eta_s:5.1f}s" if update.eta_s is not None and not done else ""
            self.stream.write(f"\r{stage:<14} [{'#' * filled}{'.' * (width - filled)}] {step}/{total}"
                              f" {update.elapsed_s:6.1f}s{eta}   ")
            self.stream.flush()
            self._last_draw = now
        elif not self.interactive and done:
            self.stream.write(f"{stage}: {total}/{total} ({update.elapsed_s:.1f}s elapsed)\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.interactive and self.stage is not None:
            self.stream.write("\n")
            self.stream.flush()


def run(args) -> int:
    from ..service.images import check_files
    from ..service.job import GenerateSettings, check_output_folder, load_pipeline, run_generate

    settings = GenerateSettings(steps=args.steps, guidance=args.guidance, seed=args.seed, scheduler=args.scheduler,
                                mesh=not args.no_mesh, mesh_quality=args.mesh_quality,
                                overwrite=args.overwrite).validate()
    # cheap checks first: nobody should wait for the model to load to learn of a typo
    check_files(args.images)
    check_output_folder(args.out, args.overwrite)
    pipe, checkpoint, device = load_pipeline(args.checkpoint, args.device, args.low_vram)
    bar = ProgressBar(enabled=not args.quiet)
    try:
        folder = run_generate(pipe, args.images, args.out, settings, device=device, checkpoint=checkpoint,
                              progress=bar, low_vram=args.low_vram)
    finally:
        bar.close()
    print(folder)  # stdout: just the result folder, for scripts
    return 0
