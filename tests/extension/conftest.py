"""tests/extension: the helpers beside these tests (synthetic result folders) are importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def opaque_tiny_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with its VAE's alpha output pushed to 1: random weights give noise
    masks no reconstruction can make an object of, fully opaque views give a well-defined one
    (the intersection of the view frustums), so the real mesh stage runs."""
    import torch

    from mvdpp.pipelines import MVDiffusionPPPipeline

    pipe = MVDiffusionPPPipeline.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias[3] = 20.0
    folder = tmp_path_factory.mktemp("opaque_tiny_checkpoint")
    pipe.save_pretrained(folder)
    return folder
