"""Average the weights of pipeline folders from one training run (a "model soup").

Checkpoints a few thousand steps apart on one run sit in the same basin, and the mean of their
weights can sample better than each of them: a longer average than the EMA's. The first folder
is the template: every other file (configs, scheduler, the frozen VAE unless it differs) is
copied from it; every safetensors file that all folders share is averaged tensor by tensor in
float32 and written back in the template's dtype.

    python tools/average_checkpoints.py OUT CK_A CK_B [CK_C ...] [--weights 0.5 0.25 0.25]

Only tensors with the same names and shapes are averaged; anything else is an error (the
folders are not one model), never a silent mix.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME as WEIGHTS_FILE
from safetensors.torch import load_file, save_file


def weight_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.glob(f"*/{WEIGHTS_FILE}"))


def check_same_model(states: list[dict[str, torch.Tensor]]) -> None:
    first = states[0]
    for state in states[1:]:
        if state.keys() != first.keys():
            raise ValueError("the checkpoints' tensors differ in name: they are not the same model")
        for name, tensor in state.items():
            if tensor.shape != first[name].shape:
                raise ValueError(f"{name}: shape {tuple(tensor.shape)} vs {tuple(first[name].shape)}")


def average_state(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Weighted mean per tensor of states that passed ``check_same_model``."""
    first = states[0]
    out = {}
    for name, tensor in first.items():
        if not tensor.is_floating_point():  # counters and the like: the template's
            out[name] = tensor.clone()
            continue
        total = sum(w * s[name].float() for w, s in zip(weights, states))
        out[name] = total.to(tensor.dtype).contiguous()
    return out


def average_folders(out: Path, folders: list[Path], weights: list[float] | None = None) -> list[Path]:
    """Write the weighted mean of ``folders`` (pipeline folders) to ``out``; returns the averaged files."""
    if len(folders) < 2:
        raise ValueError("give at least two checkpoint folders")
    weights = [1.0 / len(folders)] * len(folders) if weights is None else [float(w) for w in weights]
    if len(weights) != len(folders) or abs(sum(weights) - 1.0) > 1e-6 or min(weights) < 0:
        raise ValueError(f"--weights needs {len(folders)} non-negative numbers that add up to 1 (got {weights})")
    for folder in folders:
        if not (folder / "model_index.json").is_file():
            raise ValueError(f"{folder} is no pipeline folder (no model_index.json)")
    files = weight_files(folders[0])
    for folder in folders[1:]:
        if weight_files(folder) != files:
            raise ValueError(f"{folder} has other weight files than {folders[0]}")
    if out.exists():
        raise ValueError(f"{out} exists; give a new folder")
    staging = out.with_name(out.name + ".partial")  # nothing half-written under the final name
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folders[0], staging)
    (staging / "training_state.json").unlink(missing_ok=True)  # the mean of several states is none of them
    averaged = []
    try:
        for relative in files:
            states = [load_file(str(folder / relative)) for folder in folders]
            check_same_model(states)
            if all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in states[0]):
                continue  # frozen in training (e.g. the VAE): the template's copy is already there
            save_file(average_state(states, weights), str(staging / relative))
            averaged.append(relative)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / "averaged_from.json").write_text(json.dumps(
        {"folders": [str(f) for f in folders], "weights": weights, "averaged": [str(a) for a in averaged]}, indent=1))
    staging.rename(out)
    return averaged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="new pipeline folder")
    parser.add_argument("folders", type=Path, nargs="+", help="pipeline folders of one run, the first is the template")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per folder, adding up to 1 (default: equal)")
    args = parser.parse_args(argv)
    try:
        averaged = average_folders(args.out, args.folders, args.weights)
    except ValueError as exc:
        print(f"average_checkpoints: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: averaged {', '.join(str(a.parent) for a in averaged) or 'nothing (all identical)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
