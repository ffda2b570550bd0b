"""The ``mvdpp`` command line.

Each subcommand is one module in this package with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import torch and friends only inside ``run`` so that
``mvdpp --help`` stays fast. Errors meant for users (``MVDPPError``) are printed as a message and
a hint, never as a traceback; ``--debug`` shows the traceback of unexpected errors.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import MVDPPError

#: subcommand name -> module in this package
SUBCOMMANDS = {
    "generate": "generate",
    "reconstruct": "reconstruct",
    "serve": "serve",
    "train": "train",
    "eval": "evaluate",
    "bench": "bench",
    "make-evalset": "make_evalset",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvdpp", description="MVD++: reference images to 32 views and a mesh.")
    parser.add_argument("--version", action="version", version=f"mvdpp {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f".{module_name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module_name}":
                continue  # subcommand not part of this build
            raise
        sub_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except MVDPPError as exc:
        print(f"mvdpp: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mvdpp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a user-facing tool
        if args.debug:
            raise
        if _is_out_of_memory(exc):
            # not a bug: the settings asked for more memory than the machine has
            print(f"mvdpp: error: the {args.command} command ran out of memory ({_first_line(exc)})", file=sys.stderr)
            print("  hint: use a smaller --batch-size (or fewer views or objects), --low-vram where the command has it, "
                  "or close other programs using the GPU", file=sys.stderr)
            return 2
        print(f"mvdpp: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("  hint: rerun with --debug for the full traceback and report it as a bug", file=sys.stderr)
        return 1


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (or an older RuntimeError saying so) or the host's MemoryError,
    recognised without importing torch (the CLI starts without it)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
