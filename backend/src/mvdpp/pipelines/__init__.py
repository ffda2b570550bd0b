"""The MVDiffusion++ pipeline and the input preparation shared with training.

Names are imported lazily (PEP 562) so that ``mvdpp bench`` can import
``mvdpp.pipelines.benchmark_paper`` to build its command line without importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ConditionEncoding": "inputs",
    "UNetInputs": "inputs",
    "build_unet_inputs": "inputs",
    "check_view_counts": "inputs",
    "encode_condition": "inputs",
    "null_condition_latent": "inputs",
    "split_views": "inputs",
    "view_slot_ids": "inputs",
    "MVDiffusionPPPipeline": "pipeline_mvdpp",
    "MVDiffusionPPPipelineOutput": "pipeline_mvdpp",
    "SCHEDULERS": "schedulers",
    "make_scheduler": "schedulers",
    "scheduler_name": "schedulers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
