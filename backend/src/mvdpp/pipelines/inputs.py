"""How condition and generation views become multi-view UNet inputs: ONE definition, used by
``MVDiffusionPPPipeline`` for sampling and by training, so the two cannot drift apart.

Layout: per object, condition views first (view-embedding slots 32, 33, ...), then generation
views (slot = rig index 0-31); objects one after another: ``(B*V, ...)`` with ``V = Nc + Ng``.

Per view the UNet input is ``concat(noisy latent, branch mask, condition latent)``:

=============  ==============================  =============================  ======================
view           noisy latent                    branch mask (config values)    condition latent
=============  ==============================  =============================  ======================
condition      its own latent, noised at t     ``condition_branch_value``     its clean MVAE latent
generation     its latent, noised at t         ``generation_branch_value``    MVAE(white, mask 1)
=============  ==============================  =============================  ======================

The "unconditional" inputs (classifier-free guidance, and condition dropout in training) keep the
same layout, so conditional and unconditional passes batch together, but carry no information
about the condition images: the condition views' noisy latents become zeros, their condition
latents the white "null" latent, and the cross-attention tokens zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.image_encoder import encode_condition_images
from ..models.mask_vae import encode_rgba, white_rgba
from ..models.multiview_unet import FIRST_CONDITION_SLOT
from ..rig import MAX_CONDITION_VIEWS, NUM_RIG_VIEWS


@dataclass
class UNetInputs:
    """Keyword arguments of ``MultiViewUNetModel.forward`` for a batch of B objects x V views."""

    sample: torch.Tensor  # (B*V, 2C+1, h, w)
    timestep: torch.Tensor  # (B*V,)
    encoder_hidden_states: torch.Tensor  # (B*V, T, D)
    view_ids: torch.Tensor  # (B*V,) long
    num_views: int

    def as_kwargs(self) -> dict:
        return {
            "sample": self.sample,
            "timestep": self.timestep,
            "encoder_hidden_states": self.encoder_hidden_states,
            "view_ids": self.view_ids,
            "num_views": self.num_views,
        }

    def cat(self, other: "UNetInputs") -> "UNetInputs":
        """Both batches in one (e.g. conditional + unconditional for guidance)."""
        if other.num_views != self.num_views:
            raise ValueError("cannot batch inputs with different numbers of views per object")
        return UNetInputs(
            torch.cat([self.sample, other.sample]),
            torch.cat([self.timestep, other.timestep]),
            torch.cat([self.encoder_hidden_states, other.encoder_hidden_states]),
            torch.cat([self.view_ids, other.view_ids]),
            self.num_views,
        )


@dataclass
class ConditionEncoding:
    """What the condition images contribute, computed once per object set."""

    latents: torch.Tensor  # (B, Nc, C, h, w) clean, scaled MVAE latents of the condition views
    tokens: torch.Tensor  # (B, Nc*T, D) cross-attention tokens of all condition views
    null_latent: torch.Tensor  # (C, h, w) latent of the white, fully opaque image


def check_view_counts(num_condition: int, gen_view_ids: torch.Tensor) -> None:
    if not 1 <= num_condition <= MAX_CONDITION_VIEWS:
        raise ValueError(f"{num_condition} condition views; the model takes 1 to {MAX_CONDITION_VIEWS}")
    if gen_view_ids.ndim != 2 or gen_view_ids.shape[1] < 1:
        raise ValueError(f"gen_view_ids must be (B, Ng) with Ng >= 1, got shape {tuple(gen_view_ids.shape)}")
    if int(gen_view_ids.min()) < 0 or int(gen_view_ids.max()) >= NUM_RIG_VIEWS:
        raise ValueError(f"generation view ids must be in 0..{NUM_RIG_VIEWS - 1}")


def view_slot_ids(num_condition: int, gen_view_ids: torch.Tensor) -> torch.Tensor:
    """View-embedding slots (B, Nc+Ng): 32.. for the condition views, then the rig indices."""
    batch = gen_view_ids.shape[0]
    cond = torch.arange(FIRST_CONDITION_SLOT, FIRST_CONDITION_SLOT + num_condition, device=gen_view_ids.device)
    return torch.cat([cond.expand(batch, -1), gen_view_ids.long()], dim=1)


@torch.no_grad()
def null_condition_latent(vae, resolution: int, device=None) -> torch.Tensor:
    """The generation views' condition latent: MVAE(white image, mask all ones), (C, h, w)."""
    return encode_rgba(vae, white_rgba(resolution, device=device or vae.device, dtype=vae.dtype)[None])[0]


def encode_condition(vae, image_encoder, cond_images: torch.Tensor) -> ConditionEncoding:
    """Condition views (B, Nc, 4, H, W) RGBA in [-1, 1] -> latents, cross-attention tokens, null latent.

    The VAE part runs without gradients (the MVAE is frozen while the UNet trains); the image
    encoder keeps gradients so a small encoder trains together with the UNet.
    """
    batch, num_condition = cond_images.shape[:2]
    with torch.no_grad():
        latents = encode_rgba(vae, cond_images)
        null_latent = null_condition_latent(vae, cond_images.shape[-1], device=cond_images.device)
    flat = cond_images.reshape(batch * num_condition, *cond_images.shape[2:])
    tokens = encode_condition_images(image_encoder, flat)
    tokens = tokens.reshape(batch, num_condition * tokens.shape[1], tokens.shape[2])
    return ConditionEncoding(latents=latents, tokens=tokens, null_latent=null_latent)


def build_unet_inputs(
    unet_config,
    noisy_cond: torch.Tensor,
    noisy_gen: torch.Tensor,
    condition: ConditionEncoding,
    gen_view_ids: torch.Tensor,
    timesteps: torch.Tensor,
    drop_condition: torch.Tensor | bool | None = None,
) -> UNetInputs:
    """Assemble the UNet inputs for B objects.

    unet_config: ``unet.config`` (branch-mask values).
    noisy_cond: (B, Nc, C, h, w) condition latents noised at ``timesteps`` (scheduler.add_noise).
    noisy_gen: (B, Ng, C, h, w) generation latents at ``timesteps``.
    condition: from ``encode_condition``.
    gen_view_ids: (B, Ng) rig indices of the generation views (any subset of 0-31, any order).
    timesteps: (B,) or scalar: one timestep per object, shared by all its views.
    drop_condition: None/False = conditional; True = unconditional for every object; or a bool
        tensor (B,) choosing per object (condition dropout for classifier-free guidance training).
    """
    batch, num_condition = noisy_cond.shape[:2]
    num_gen = noisy_gen.shape[1]
    num_views = num_condition + num_gen
    check_view_counts(num_condition, gen_view_ids)
    device, dtype = noisy_gen.device, noisy_gen.dtype
    latent_shape = noisy_gen.shape[2:]

    cond_latents = condition.latents.to(device=device, dtype=dtype)
    null = condition.null_latent.to(device=device, dtype=dtype)
    tokens = condition.tokens.to(device=device, dtype=dtype)
    noisy_cond = noisy_cond.to(dtype)
    if drop_condition is not None and drop_condition is not False:
        drop = torch.as_tensor(drop_condition, device=device, dtype=torch.bool).expand(batch)
        keep = (~drop).to(dtype)
        keep_latent = keep.view(batch, 1, 1, 1, 1)
        noisy_cond = noisy_cond * keep_latent
        cond_latents = cond_latents * keep_latent + null * (1 - keep_latent)
        tokens = tokens * keep.view(batch, 1, 1)

    gen_cond_latents = null.expand(batch, num_gen, *latent_shape)
    noisy = torch.cat([noisy_cond, noisy_gen], dim=1)
    cond = torch.cat([cond_latents, gen_cond_latents], dim=1)
    branch = torch.empty(batch, num_views, 1, *latent_shape[1:], device=device, dtype=dtype)
    branch[:, :num_condition] = float(unet_config.condition_branch_value)
    branch[:, num_condition:] = float(unet_config.generation_branch_value)
    sample = torch.cat([noisy, branch, cond], dim=2).reshape(batch * num_views, -1, *latent_shape[1:])

    timesteps = torch.as_tensor(timesteps, device=device)
    timesteps = timesteps.expand(batch) if timesteps.ndim == 0 else timesteps
    return UNetInputs(
        sample=sample,
        timestep=timesteps.repeat_interleave(num_views),
        encoder_hidden_states=tokens.repeat_interleave(num_views, dim=0),
        view_ids=view_slot_ids(num_condition, gen_view_ids.to(device)).reshape(-1),
        num_views=num_views,
    )


def split_views(per_view: torch.Tensor, batch: int, num_condition: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UNet output (B*V, ...) -> (condition views (B, Nc, ...), generation views (B, Ng, ...))."""
    grouped = per_view.reshape(batch, -1, *per_view.shape[1:])
    return grouped[:, :num_condition], grouped[:, num_condition:]
