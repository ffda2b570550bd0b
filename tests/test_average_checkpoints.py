"""tools/average_checkpoints.py: the weight mean of pipeline folders of one model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("average_checkpoints", ROOT / "tools" / "average_checkpoints.py")
average_checkpoints = importlib.util.module_from_spec(spec)
spec.loader.exec_module(average_checkpoints)

UNET = Path("unet") / average_checkpoints.WEIGHTS_FILE
VAE = Path("vae") / average_checkpoints.WEIGHTS_FILE


def perturbed_copy(source: Path, dest: Path, shift: float) -> Path:
    """``source`` with every UNet weight moved by ``shift`` (a stand-in for a later checkpoint)."""
    import shutil

    shutil.copytree(source, dest)
    state = load_file(str(dest / UNET))
    save_file({k: (v.float() + shift).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}, str(dest / UNET))
    (dest / "training_state.json").write_text("{}")
    return dest


def test_the_mean_is_taken_per_tensor_with_the_weights_and_frozen_parts_are_copied(tiny_checkpoint, tmp_path):
    a = perturbed_copy(tiny_checkpoint, tmp_path / "a", 0.0)
    b = perturbed_copy(tiny_checkpoint, tmp_path / "b", 0.3)
    averaged = average_checkpoints.average_folders(tmp_path / "soup", [a, b], [0.75, 0.25])
    assert averaged == [UNET]  # the VAE and image encoder are identical in both: copied, not averaged
    soup, first, second = (load_file(str(f / UNET)) for f in (tmp_path / "soup", a, b))
    name = next(k for k, v in first.items() if v.is_floating_point() and v.numel() > 1)
    expected = 0.75 * first[name].float() + 0.25 * second[name].float()
    assert torch.allclose(soup[name].float(), expected, atol=1e-6)
    assert soup[name].dtype == first[name].dtype
    assert load_file(str(tmp_path / "soup" / VAE)).keys() == load_file(str(a / VAE)).keys()
    assert not (tmp_path / "soup" / "training_state.json").exists()  # a mean is no training state
    assert not (tmp_path / "soup.partial").exists()

    from mvdpp.pipelines import MVDiffusionPPPipeline

    pipe = MVDiffusionPPPipeline.from_pretrained(tmp_path / "soup")  # a pipeline folder like any other
    loaded = dict(pipe.unet.named_parameters())[name]
    assert torch.allclose(loaded.float(), expected, atol=1e-6)


def test_folders_of_different_models_are_refused_and_nothing_is_written(tiny_checkpoint, tmp_path):
    a = perturbed_copy(tiny_checkpoint, tmp_path / "a", 0.0)
    b = perturbed_copy(tiny_checkpoint, tmp_path / "b", 0.0)
    state = load_file(str(b / UNET))
    name = next(iter(state))
    state[name] = torch.zeros(3, 3)
    save_file(state, str(b / UNET))
    with pytest.raises(ValueError, match="shape"):
        average_checkpoints.average_folders(tmp_path / "soup", [a, b])
    assert not (tmp_path / "soup").exists() and not (tmp_path / "soup.partial").exists()
    del state[name]  # a missing tensor is the same clear error, not a KeyError
    save_file(state, str(b / UNET))
    with pytest.raises(ValueError, match="differ in name"):
        average_checkpoints.average_folders(tmp_path / "soup", [a, b])
    assert average_checkpoints.main([str(tmp_path / "x"), str(a), str(b), "--weights", "0.9", "0.9"]) == 2
    assert average_checkpoints.main([str(tmp_path / "y"), str(a), str(tmp_path)]) == 2  # no pipeline folder
