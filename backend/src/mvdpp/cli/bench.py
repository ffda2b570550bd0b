"""`mvdpp bench TARGET`: benchmarks whose figures go into BENCHMARKS.md.

Each target lives with the code it measures, in a module exposing ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; torch is imported only inside ``run``.
"""

from __future__ import annotations

import importlib

HELP = "measure speed and memory (figures for BENCHMARKS.md)"

#: target -> module that implements it
TARGETS = {
    "render": "mvdpp.data.benchmark",
    "recon": "mvdpp.recon.benchmark",
    "train": "mvdpp.training.benchmark_train",
    "sample": "mvdpp.training.benchmark_sample",
    "paper": "mvdpp.pipelines.benchmark_paper",
    "service": "mvdpp.service.benchmark",
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, module_name in TARGETS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if module_name.startswith(exc.name or "\0"):
                continue  # target not part of this build yet
            raise
        target = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(target)
        target.set_defaults(_bench=module.run)


def run(args) -> int:
    return args._bench(args)
