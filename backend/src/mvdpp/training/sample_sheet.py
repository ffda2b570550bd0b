"""Sample sheets written during training: a quick look at what the EMA weights do now.

UNet stages: row 1 the condition views, row 2 the 8 generated views (the pipeline's own sampler),
row 3 their ground truth. VAE stage: inputs, reconstructions, reconstructed mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

SAMPLE_STEPS = 20
SAMPLE_GUIDANCE = 2.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 4, H, W) in [-1, 1] -> uint8 (N, H, W, 4)."""
    return ((images.float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def grid(rows: list[np.ndarray], size: int) -> Image.Image:
    """Rows of uint8 (N, H, W, C>=3) images -> one RGB sheet on white, ``size`` px per cell."""
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * size, len(rows) * size), "white")
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            cell = Image.fromarray(np.ascontiguousarray(image[..., :3])).resize((size, size), Image.Resampling.BILINEAR)
            sheet.paste(cell, (x * size, y * size))
    return sheet


@torch.no_grad()
def sample_sheet(pipe, stage, preview: dict, path: Path, seed: int = 0) -> Path:
    cond = preview["cond"][0]
    if "gen" in preview:
        gen = preview["gen"][0]
    else:  # latent cache: the ground truth is what the VAE decodes from the cached latents
        from ..models import decode_rgba

        gen = decode_rgba(pipe.vae, preview["gen_latents"][0].to(pipe.vae.device, pipe.vae.dtype))
    size = min(128, pipe.resolution)
    if stage.trains == "vae":
        from ..models import decode_rgba, encode_rgba

        images = torch.cat([cond, gen]).to(pipe.vae.device, pipe.vae.dtype)
        recon = decode_rgba(pipe.vae, encode_rgba(pipe.vae, images))
        mask = recon[:, 3:4].expand(-1, 3, -1, -1)
        rows = [to_uint8(images), to_uint8(recon), to_uint8(torch.cat([mask, mask[:, :1]], dim=1))]
    else:
        inputs = [Image.fromarray(view) for view in to_uint8(cond)]
        view_ids = [int(v) for v in preview["gen_view_ids"][0]]
        generator = torch.Generator(device=pipe.unet.device).manual_seed(seed)
        out = pipe(inputs, num_inference_steps=SAMPLE_STEPS, guidance_scale=SAMPLE_GUIDANCE, generator=generator,
                   view_ids=view_ids, output_type="np")
        rows = [to_uint8(cond), out.images, to_uint8(gen)]
    path.parent.mkdir(parents=True, exist_ok=True)
    grid(rows, size).save(path)
    return path
