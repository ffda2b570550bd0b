"""How much of a view survives the VAE: round trip and colour probe (BENCHMARKS.md, "Embedded default model").

Encodes ground-truth rig views of an evaluation set with the first checkpoint's VAE encoder and
decodes them with each checkpoint's decoder (checkpoints that share an encoder, e.g. before and
after a `vae-decoder` run), then prints per decoder:

* PSNR of the whole view on white (the evaluation's view scoring, ``mvdpp.evaluation.scoring``);
* PSNR over object pixels only (inside the true mask), where a wrong hue shows;
* chroma RMSE: the error of each object pixel's colour minus its grey level.

And, once, a colour probe of the encoder: a least-squares fit from the latents around each 8x8
object patch (3x3 latent neighbourhood, with squares) to the patch's colour minus its grey
level; R^2 per channel on held-back patches. Low R^2 means the latents do not carry that hue
and no decoder can bring it back.

    mvdpp make-evalset E8 --count 8 --size 256 --inputs 4
    git worktree add /tmp/old ec193b9      # the decoder shipped before the vae-decoder stage
    PYTHONPATH=backend/src python tools/probe_vae.py E8 backend/src/mvdpp/weights/default \\
        --compare /tmp/old/backend/src/mvdpp/weights/default
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from mvdpp import metrics
from mvdpp.evaluation.scoring import on_white
from mvdpp.models import decode_rgba, encode_rgba
from mvdpp.pipelines.pipeline_mvdpp import decoded_to_uint8


def load_views(evalset: Path, every: int) -> np.ndarray:
    """uint8 (N, H, W, 4): every ``every``-th rig view of the set's objects, in name order."""
    files = sorted(evalset.glob("object_*/views/*.png"))[::every]
    if not files:
        raise SystemExit(f"no views under {evalset}/object_*/views: give a folder written by `mvdpp make-evalset`")
    return np.stack([np.asarray(Image.open(f).convert("RGBA")) for f in files])


def to_model_range(views: np.ndarray) -> torch.Tensor:
    array = views.astype(np.float32)
    array[array[..., 3] == 0, :3] = 255.0  # the pipeline's convention: empty pixels are white
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def decoder_figures(truth: np.ndarray, decoded: np.ndarray) -> dict:
    mask = truth[..., 3] > 0
    size = truth.shape[1]  # scored at the views' own size (the evaluation's 256 px for an eval set)
    truth_rgb = np.stack([on_white(v, size) for v in truth]).astype(np.float64) / 255
    decoded_rgb = np.stack([on_white(v, size) for v in decoded]).astype(np.float64) / 255
    error = decoded_rgb - truth_rgb
    object_mse = float(np.mean(error[mask] ** 2))
    chroma_error = error - error.mean(axis=-1, keepdims=True)
    return {
        "psnr_view": float(np.mean([metrics.psnr(a, b) for a, b in zip(decoded_rgb, truth_rgb)])),
        "psnr_object": 10 * np.log10(1 / object_mse),
        "chroma_rmse": float(np.sqrt(np.mean(chroma_error[mask] ** 2))),
    }


def colour_probe(views: torch.Tensor, latents: torch.Tensor) -> np.ndarray:
    """R^2 per RGB channel of colour-minus-grey, predicted from the latents (see the module doc)."""
    factor = views.shape[-1] // latents.shape[-1]
    rgb, alpha = (views[:, :3] + 1) / 2, (views[:, 3:] + 1) / 2
    coverage = torch.nn.functional.avg_pool2d(alpha, factor)[:, 0]
    colour = torch.nn.functional.avg_pool2d(rgb * alpha, factor) / coverage[:, None].clamp(min=1e-3)
    keep = coverage > 0.99  # patches fully on the object
    target = colour.permute(0, 2, 3, 1)[keep]
    target = target - target.mean(dim=1, keepdim=True)
    channels = latents.shape[1]
    neighbourhood = torch.nn.functional.unfold(latents, 3, padding=1)
    features = neighbourhood.reshape(latents.shape[0], channels * 9, *latents.shape[-2:]).permute(0, 2, 3, 1)[keep]
    design = torch.cat([features, features**2], dim=1).double()
    # Standardised columns, constant ones dropped, and an SVD solver that cuts tiny singular
    # values: latents with a dead channel make the plain fit rank-deficient, and its answer then
    # swung with rounding (R^2 0.98 or 0.30 for the same data, depending on what ran before).
    spread = design.std(dim=0)
    varying = spread > 1e-6
    design = (design[:, varying] - design[:, varying].mean(dim=0)) / spread[varying]
    design = torch.cat([design, torch.ones(len(design), 1, dtype=design.dtype)], dim=1)
    held_back = torch.arange(len(design)) % 4 == 0
    weights = torch.linalg.lstsq(design[~held_back], target[~held_back].double(), rcond=1e-10, driver="gelsd").solution
    residual = design[held_back] @ weights - target[held_back].double()
    spread = target[held_back].double() - target[held_back].double().mean(dim=0)
    return (1 - residual.pow(2).sum(0) / spread.pow(2).sum(0)).numpy()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evalset", type=Path, help="folder written by `mvdpp make-evalset`")
    parser.add_argument("checkpoint", help="pipeline folder whose VAE encodes (and decodes)")
    parser.add_argument("--compare", nargs="*", default=[], help="more pipeline folders whose decoders decode the same latents")
    parser.add_argument("--every", type=int, default=2, help="take every N-th view (default 2)")
    args = parser.parse_args()

    truth = load_views(args.evalset, args.every)
    views = to_model_range(truth)
    encoder = AutoencoderKL.from_pretrained(args.checkpoint, subfolder="vae").float().eval()
    latents = torch.cat([encode_rgba(encoder, chunk, chunk_size=32) for chunk in views.split(32)])
    print(f"{len(truth)} views of {args.evalset}; latents {tuple(latents.shape[1:])} from {args.checkpoint}'s encoder")
    for folder in [args.checkpoint, *args.compare]:
        vae = encoder if folder == args.checkpoint else AutoencoderKL.from_pretrained(folder, subfolder="vae").float().eval()
        decoded = np.concatenate([decoded_to_uint8(decode_rgba(vae, chunk)) for chunk in latents.split(32)])
        figures = decoder_figures(truth, decoded)
        print(f"decoder of {folder}: PSNR whole view {figures['psnr_view']:.2f} dB, object pixels "
              f"{figures['psnr_object']:.2f} dB, chroma RMSE {figures['chroma_rmse']:.4f}")
    r2 = colour_probe(views, latents)
    print(f"colour probe of the encoder, R^2 of (red, green, blue) minus grey: {r2[0]:.2f}, {r2[1]:.2f}, {r2[2]:.2f}")


if __name__ == "__main__":
    main()
