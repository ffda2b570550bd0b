"""`mvdpp serve`: the long-lived backend process the Blender extension talks to (docs/protocol.md)."""

from __future__ import annotations

HELP = "serve generate/reconstruct requests as JSON lines on stdin/stdout (for the Blender extension)"


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", metavar="DIR", help="pipeline folder to load (default: the embedded model)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="where the model runs (default: CUDA when available, else the CPU)")
    parser.add_argument("--low-vram", action="store_true",
                        help="trade speed for GPU memory (sequential guidance, chunked VAE, CPU offload)")


def run(args) -> int:
    from ..service.server import serve

    def load():
        # Imported here, after stdout is reserved for the protocol: torch & co. may print.
        from ..service.job import ModelJobs

        jobs = ModelJobs.load(checkpoint=args.checkpoint, device=args.device, low_vram=args.low_vram)
        return jobs.handlers(), jobs.ready_info()

    return serve(load)
