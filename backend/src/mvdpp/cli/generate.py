"""`mvdpp generate`: reference images -> a result folder (32 views, cameras, mesh, inputs, meta)."""

from __future__ import annotations

import sys
import time

HELP = "turn 1-10 reference images of an object (or a text prompt) into 32 views and a mesh (a result folder)"


def add_arguments(parser) -> None:
    from ..service.job import DEVICES, MESH_QUALITIES, SCHEDULERS, GenerateSettings

    defaults = GenerateSettings()
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="1 to 10 images of one object (PNG, JPEG, WebP, TIFF, BMP); the first sets the front")
    text = parser.add_argument_group("text to 3D (instead of images)")
    text.add_argument("--prompt", metavar="TEXT", help='describe one object, e.g. "a red ceramic teapot"')
    text.add_argument("--t2i", metavar="MODEL",
                      help="diffusers text-to-image pipeline folder or hub id (e.g. stabilityai/sd-turbo; downloaded once)")
    text.add_argument("--t2i-steps", type=int, default=None,
                      help="text-to-image steps (default: 1 for Turbo-style models, else the pipeline's own, e.g. 50 for SD)")
    text.add_argument("--t2i-guidance", type=float, default=None,
                      help="text-to-image guidance (default: 0 for Turbo-style models, else the pipeline's own, e.g. 7.5 for SD)")
    parser.add_argument("--out", required=True, metavar="DIR", help="result folder to create")
    parser.add_argument("--checkpoint", metavar="DIR", help="pipeline folder (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"denoising steps (default {defaults.steps})")
    parser.add_argument("--guidance", type=float, default=defaults.guidance,
                        help=f"classifier-free guidance scale (default {defaults.guidance})")
    parser.add_argument("--guidance-rescale", type=float, default=defaults.guidance_rescale,
                        help="0-1: how far each view's guided prediction is brought back to the conditional one's "
                             f"spread, against over-exposed views at strong guidance (default {defaults.guidance_rescale})")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, recorded in meta.json)")
    parser.add_argument("--scheduler", choices=tuple(SCHEDULERS), default=defaults.scheduler,
                        help="sampler (default: the checkpoint's own)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default: CUDA when available, else the CPU")
    parser.add_argument("--no-mesh", action="store_true", help="skip the mesh reconstruction")
    parser.add_argument("--mesh-quality", choices=MESH_QUALITIES, default=defaults.mesh_quality,
                        help="reconstruction quality (default auto: draft, which suits generated views on any device)")
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

    def __call__(self, stage: str, step: int, total: int, **extra) -> None:
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


def check_image_or_prompt(args) -> None:
    from .. import errors
    from ..errors import MVDPPError

    def bad(message: str, hint: str) -> MVDPPError:
        return MVDPPError(errors.BAD_REQUEST, message, hint)

    if args.prompt is not None and args.images:
        raise bad("Give either reference images or --prompt, not both.",
                  "Drop the images to make the condition image from the prompt, or drop --prompt.")
    if args.prompt is None:
        if args.t2i is not None or args.t2i_steps is not None or args.t2i_guidance is not None:
            raise bad("--t2i, --t2i-steps and --t2i-guidance need --prompt.", 'Add --prompt "a red ceramic teapot".')
        if not args.images:
            raise bad("No reference images given.", 'Pass 1 to 10 image files, or --prompt "..." --t2i MODEL for text to 3D.')
    elif args.t2i is None:
        raise bad("--prompt needs a text-to-image model (--t2i MODEL).",
                  "Pass a diffusers text-to-image pipeline folder or a hub id such as stabilityai/sd-turbo.")


def run(args) -> int:
    from ..service.images import check_files
    from ..service.job import GenerateSettings, check_output_folder, load_pipeline, run_generate

    check_image_or_prompt(args)
    settings = GenerateSettings(steps=args.steps, guidance=args.guidance, guidance_rescale=args.guidance_rescale,
                                seed=args.seed, scheduler=args.scheduler, mesh=not args.no_mesh, mesh_quality=args.mesh_quality,
                                overwrite=args.overwrite).validate()
    # cheap checks first: nobody should wait for the model to load to learn of a typo
    t2i_settings = None
    if args.prompt is not None:
        from ..service.text_to_image import TextToImageSettings, check_local_folder, local_folder

        t2i_settings = TextToImageSettings(args.prompt, args.t2i, args.t2i_steps, args.t2i_guidance).validate()
        folder = local_folder(t2i_settings.model)
        if folder is not None:
            check_local_folder(folder)
    else:
        check_files(args.images)
    check_output_folder(args.out, args.overwrite)
    pipe, checkpoint, device = load_pipeline(args.checkpoint, args.device, args.low_vram)
    bar = ProgressBar(enabled=not args.quiet)
    try:
        if t2i_settings is not None:
            folder = run_prompt(args, t2i_settings, pipe, checkpoint, device, settings, bar)
        else:
            folder = run_generate(pipe, args.images, args.out, settings, device=device, checkpoint=checkpoint,
                                  progress=bar, low_vram=args.low_vram)
    finally:
        bar.close()
    from ..service.job import result_warning

    warning = result_warning(folder)
    if warning:
        print(f"mvdpp: warning: {warning}", file=sys.stderr)
    print(folder)  # stdout: just the result folder, for scripts
    return 0


def run_prompt(args, t2i_settings, pipe, checkpoint, device, settings, bar):
    import tempfile

    from ..service.job import run_text_to_3d, translate_out_of_memory
    from ..service.text_to_image import load_text_to_image

    with translate_out_of_memory("loading the text-to-image model", args.low_vram):
        t2i_pipe = load_text_to_image(t2i_settings.model, device, args.low_vram)
    with tempfile.TemporaryDirectory(prefix="mvdpp-t2i-") as staging:
        return run_text_to_3d(pipe, t2i_pipe, t2i_settings, args.out, settings, staging, device=device,
                              checkpoint=checkpoint, progress=bar, low_vram=args.low_vram)
