"""Initialise the ``paper`` model from Stable Diffusion 2 inpainting + a CLIP image encoder.

PAPER.md: the UNet starts from an SD *inpainting* UNet (9 input channels) and each view's 9
channels (noisy latent, branch mask, condition latent) go through a 1x1 conv down to 4 before
the UNet. The paper does not say how the pretrained 9-channel first conv is used; this code:

* copies every weight of the SD UNet into the multi-view UNet's body, except ``conv_in``, of
  which it keeps the 4 noisy-latent input channels (the body takes 4 channels);
* starts the 1x1 reduction conv as the identity on the noisy latent and zero on the mask and
  condition latent, and the view-embedding scale at zero.

So the initial model is exactly the SD inpainting UNet run with an empty mask and masked image
on every view (only the self-attention now spans views), and training learns to read the branch
mask and the condition latents from there. The VAE becomes the RGBA mask-aware VAE
(``expand_rgb_vae_to_rgba``); the image encoder is a ``CLIPVisionModelWithProjection`` whose
projection width must equal the UNet's cross-attention width (1024 for SD 2 and ViT-H/14).
"""

from __future__ import annotations

import inspect

from ..errors import CHECKPOINT, MVDPPError

#: UNet2DConditionModel settings the multi-view UNet sets itself.
_OWN_KEYS = {
    "sample_size", "in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
    "mid_block_type", "layers_per_block", "attention_head_dim", "cross_attention_dim", "use_linear_projection",
    "norm_num_groups", "class_embed_type",
}


def multiview_unet_from_sd(sd_unet, global_attention_levels=None):
    """A ``MultiViewUNetModel`` holding the weights of a (9- or 4-channel) SD ``UNet2DConditionModel``."""
    import torch
    from diffusers.models import UNet2DConditionModel

    from ..models.multiview_unet import MultiViewUNetModel

    config = dict(sd_unet.config)
    defaults = {name: p.default for name, p in inspect.signature(UNet2DConditionModel.__init__).parameters.items()}
    extras = {k: v for k, v in config.items()
              if not k.startswith("_") and k not in _OWN_KEYS and k in defaults and v != defaults[k]
              and not (isinstance(v, list) and tuple(v) == defaults[k])}
    if config.get("class_embed_type") is not None or config.get("addition_embed_type") is not None:
        raise MVDPPError(CHECKPOINT, "the Stable Diffusion UNet uses class or addition embeddings",
                         "use a Stable Diffusion 2 (inpainting) UNet checkpoint")
    latent_channels = config["out_channels"]
    unet = MultiViewUNetModel(
        sample_size=config["sample_size"],
        latent_channels=latent_channels,
        block_out_channels=tuple(config["block_out_channels"]),
        down_block_types=tuple(config["down_block_types"]),
        up_block_types=tuple(config["up_block_types"]),
        mid_block_type=config["mid_block_type"],
        layers_per_block=config["layers_per_block"],
        attention_head_dim=config["attention_head_dim"] if isinstance(config["attention_head_dim"], int) else tuple(config["attention_head_dim"]),
        cross_attention_dim=config["cross_attention_dim"],
        use_linear_projection=config["use_linear_projection"],
        norm_num_groups=config["norm_num_groups"],
        global_attention_levels=global_attention_levels,
        extra_body_config=extras or None,
    )
    state = dict(sd_unet.state_dict())
    state["conv_in.weight"] = state["conv_in.weight"][:, :latent_channels]
    result = unet.body.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise MVDPPError(CHECKPOINT, f"the Stable Diffusion UNet does not match: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}", "use a Stable Diffusion 2 (inpainting) UNet checkpoint")
    with torch.no_grad():
        unet.reset_input_reduce()
        unet.reset_view_embedding(std=0.0)
    return unet.to(sd_unet.dtype)


def pipeline_from_stable_diffusion(pipeline_class, sd_path, image_encoder_path=None, *, image_encoder_subfolder=None,
                                   scheduler: str = "ddpm", prediction_type: str | None = None,
                                   global_attention_levels=None, torch_dtype=None, **load_kwargs):
    """Build the pipeline from a diffusers Stable Diffusion (inpainting) folder or hub id.

    sd_path: has ``unet/``, ``vae/`` and ``scheduler/`` (e.g. "stabilityai/stable-diffusion-2-inpainting").
    image_encoder_path: a CLIPVisionModelWithProjection (folder or hub id, with
        ``image_encoder_subfolder``, e.g. "stabilityai/stable-diffusion-2-1-unclip" + "image_encoder");
        default: ``sd_path``'s own ``image_encoder/``.
    """
    from diffusers import DDPMScheduler
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    from ..models.mask_vae import expand_rgb_vae_to_rgba
    from .schedulers import make_scheduler

    dtype_kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    try:
        sd_unet = UNet2DConditionModel.from_pretrained(sd_path, subfolder="unet", **dtype_kwargs, **load_kwargs)
        rgb_vae = AutoencoderKL.from_pretrained(sd_path, subfolder="vae", **dtype_kwargs, **load_kwargs)
        sd_scheduler = DDPMScheduler.from_pretrained(sd_path, subfolder="scheduler", **load_kwargs)
        if image_encoder_path is None:
            image_encoder_path, image_encoder_subfolder = sd_path, "image_encoder"
        encoder_kwargs = {"subfolder": image_encoder_subfolder} if image_encoder_subfolder else {}
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(image_encoder_path, **encoder_kwargs, **dtype_kwargs, **load_kwargs)
    except (OSError, ValueError) as exc:
        raise MVDPPError(CHECKPOINT, f"could not load the Stable Diffusion / CLIP checkpoint: {exc}".splitlines()[0],
                         "pass a diffusers Stable Diffusion inpainting folder (unet/, vae/, scheduler/) and a CLIP vision model") from exc
    if image_encoder.config.projection_dim != sd_unet.config.cross_attention_dim:
        raise MVDPPError(CHECKPOINT, f"the CLIP image embedding has width {image_encoder.config.projection_dim} but the UNet "
                         f"cross-attends to width {sd_unet.config.cross_attention_dim}",
                         "use a CLIP image encoder matching the UNet (ViT-H/14, 1024, for Stable Diffusion 2)")
    unet = multiview_unet_from_sd(sd_unet, global_attention_levels)
    return pipeline_class(
        unet=unet,
        vae=expand_rgb_vae_to_rgba(rgb_vae),
        image_encoder=image_encoder,
        scheduler=make_scheduler(scheduler, like=sd_scheduler, prediction_type=prediction_type),
    )
