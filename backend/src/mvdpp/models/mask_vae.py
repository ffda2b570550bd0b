"""Mask-aware VAE (PAPER.md, "MVAE"): a diffusers ``AutoencoderKL`` with RGBA in and RGBA out.

The alpha channel is the object mask in [-1, 1] (-1 background, 1 object). The decoded alpha cuts
the object out of the generated views. Helpers here encode/decode whole view batches and turn a
3-channel Stable Diffusion VAE into the 4-channel one.
"""

from __future__ import annotations

import torch
from diffusers.models import AutoencoderKL

RGBA_CHANNELS = 4


def build_mask_vae(block_out_channels=(128, 256, 512, 512), layers_per_block: int = 2, latent_channels: int = 4,
                   norm_num_groups: int = 32, sample_size: int = 512, scaling_factor: float = 0.18215) -> AutoencoderKL:
    """A randomly initialised RGBA VAE (downsampling 2**(len(block_out_channels)-1))."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=RGBA_CHANNELS,
        out_channels=RGBA_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
    )


def expand_rgb_vae_to_rgba(rgb_vae: AutoencoderKL) -> AutoencoderKL:
    """Copy a 3-channel (Stable Diffusion) VAE into a 4-channel RGBA one.

    Encoder: the new alpha input starts with zero weights, so latents of an image equal the RGB
    VAE's until fine-tuning teaches it the mask. Decoder: the alpha output starts as minus the
    mean of the RGB outputs. The project's views are composited over white, so the background
    decodes to about -1 (background) and most objects to higher values: a usable mask before the
    mask is fine-tuned (the paper fine-tunes with binary cross-entropy on it).
    """
    config = dict(rgb_vae.config)
    if config["in_channels"] != 3 or config["out_channels"] != 3:
        raise ValueError(f"expected a 3-channel VAE, got {config['in_channels']} in / {config['out_channels']} out")
    config.update(in_channels=RGBA_CHANNELS, out_channels=RGBA_CHANNELS)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    rgba_vae = AutoencoderKL.from_config(config).to(dtype=rgb_vae.dtype)
    state = rgb_vae.state_dict()
    w_in, w_out, b_out = state["encoder.conv_in.weight"], state["decoder.conv_out.weight"], state["decoder.conv_out.bias"]
    state["encoder.conv_in.weight"] = torch.cat([w_in, torch.zeros_like(w_in[:, :1])], dim=1)
    state["decoder.conv_out.weight"] = torch.cat([w_out, -w_out.mean(dim=0, keepdim=True)], dim=0)
    state["decoder.conv_out.bias"] = torch.cat([b_out, -b_out.mean(dim=0, keepdim=True)], dim=0)
    rgba_vae.load_state_dict(state)
    return rgba_vae


def encode_rgba(vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator | None = None,
                sample: bool = False, chunk_size: int = 16) -> torch.Tensor:
    """RGBA views (..., 4, H, W) in [-1, 1] -> scaled latents (..., C, h, w).

    ``sample=False`` takes the posterior mean (deterministic; what conditioning uses).
    """
    lead, image_shape = images.shape[:-3], images.shape[-3:]
    # Inputs stay on their device: with model CPU offload the VAE moves to it when it runs.
    flat = images.reshape(-1, *image_shape).to(dtype=vae.dtype)
    latents = []
    for chunk in flat.split(chunk_size):
        dist = vae.encode(chunk).latent_dist
        latents.append(dist.sample(generator) if sample else dist.mode())
    latents = torch.cat(latents) * vae.config.scaling_factor
    return latents.reshape(*lead, *latents.shape[1:])


def decode_rgba(vae: AutoencoderKL, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
    """Scaled latents (N, C, h, w) -> RGBA (N, 4, H, W) in [-1, 1], decoded ``chunk_size`` at a time
    so decoding 32 views at 512 px fits in memory."""
    out = []
    for chunk in latents.split(max(1, chunk_size)):
        out.append(vae.decode(chunk.to(vae.dtype) / vae.config.scaling_factor).sample.clamp(-1, 1))
    return torch.cat(out)


def white_rgba(resolution: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The generation views' condition image: white, mask all ones (PAPER.md), (4, H, W) in [-1, 1]."""
    return torch.ones(RGBA_CHANNELS, resolution, resolution, device=device, dtype=dtype)


#: A UNet stage wants unit-variance latents (the noise schedule assumes it). A trained VAE's
#: latents drift from whatever ``scaling_factor`` its config started with (Stable Diffusion's
#: 0.18215 left the first embedded VAE's latents at std 0.32, so most timesteps were nearly
#: pure noise); ``calibrate_latent_scale`` measures and fixes that when it is off by more than this.
LATENT_STD_TOLERANCE = 0.2


@torch.no_grad()
def calibrate_latent_scale(vae: AutoencoderKL, images: torch.Tensor) -> tuple[float, float, float]:
    """Set ``vae.config.scaling_factor`` so the scaled latents of ``images`` (N, 4, H, W) have
    unit standard deviation, if they are off by more than ``LATENT_STD_TOLERANCE``.

    Returns (measured std, old factor, new factor); new == old when nothing changed. The factor
    is rounded to 4 significant digits so processes that render slightly different images agree.
    """
    old = float(vae.config.scaling_factor)
    std = float(encode_rgba(vae, images.to(vae.device)).float().std())
    if abs(std - 1.0) <= LATENT_STD_TOLERANCE or std == 0.0:
        return std, old, old
    new = float(f"{old / std:.4g}")
    vae.register_to_config(scaling_factor=new)
    return std, old, new
