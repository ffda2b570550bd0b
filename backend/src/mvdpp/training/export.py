"""Writing a trained pipeline as the diffusers folder users load (safetensors, fp16)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch

from .run_folder import check_export_target


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6


def save_fp16_pipeline(pipe, folder: str | Path) -> Path:
    """Save ``pipe`` in fp16 to ``folder`` (replacing it), loadable by
    ``MVDiffusionPPPipeline.from_pretrained``. Written beside and renamed, so an interrupted
    export never leaves a half folder where a good one was."""
    folder = Path(folder)
    check_export_target(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its "keep in float32" notice lists no module here
    try:
        # A copy: the pipeline may share frozen modules with a training run that goes on in fp32.
        pipe = copy.deepcopy(pipe).to(torch.float16)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    pipe.save_pretrained(partial, safe_serialization=True)
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


def export_run(run_folder: str | Path, folder: str | Path) -> Path:
    """Export the EMA pipeline of a run's latest checkpoint (no training) to ``folder``."""
    from .run_folder import STATE_FILE
    from .trainer import load_pipeline

    pipe, source = load_pipeline(run_folder)
    folder = save_fp16_pipeline(pipe, folder)
    state = Path(source).parent / STATE_FILE
    if state.is_file():
        shutil.copyfile(state, folder / STATE_FILE)
    return folder
