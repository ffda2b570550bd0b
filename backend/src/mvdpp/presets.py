"""Model configurations by name: "tiny" (CPU tests), "small", "embedded" (the shipped model) and
"paper" (the Stable Diffusion 2 inpainting-sized model of MVDiffusion++).

``PRESETS`` is plain data (no torch import); ``build_pipeline`` builds a randomly initialised
``MVDiffusionPPPipeline`` from one. Per-head attention width is kept >= 32 everywhere: in
diffusers' ``UNet2DConditionModel`` ``attention_head_dim`` is the NUMBER of heads, and narrow heads
make attention several times slower for nothing (PAPER.md, "Measured here").
"""

from __future__ import annotations

from .errors import BAD_INPUT, MVDPPError

_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

PRESETS: dict[str, dict] = {
    # Seconds per pipeline call on a CPU: 64 px images, 8x8 latents. Exercises every code path.
    "tiny": {
        "resolution": 64,
        "unet": {
            "sample_size": 8,
            "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            "layers_per_block": 1,
            "attention_head_dim": (1, 2),  # heads: 32 channels each
            "cross_attention_dim": 32,
            "norm_num_groups": 8,
            "reduce_input": False,
        },
        "vae": {"block_out_channels": (16, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8},
        "image_encoder": {"image_size": 32, "channels": (16, 32), "tokens_per_side": 2, "embed_dim": 32},
        "scheduler": "dpm++",
    },
    # For quick training experiments: 128 px, 16x16 latents, ~4M parameters.
    "small": {
        "resolution": 128,
        "unet": {
            "sample_size": 16,
            "block_out_channels": (32, 64, 128),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "layers_per_block": 1,
            "attention_head_dim": (1, 2, 2),  # heads: 32, 32, 64 channels each
            "cross_attention_dim": 128,
            "norm_num_groups": 16,
            "reduce_input": False,
        },
        "vae": {"block_out_channels": (16, 32, 64, 64), "layers_per_block": 1, "norm_num_groups": 8},
        "image_encoder": {"image_size": 128, "channels": (32, 64, 128), "tokens_per_side": 4, "embed_dim": 128},
        "scheduler": "dpm++",
    },
    # The shipped model: 256 px, 32x32 latents, all weights <= 40 MB in fp16, one image -> 32
    # views in well under 2 minutes on 2 CPU cores (docs/model.md). The FLOPs of a view are spread
    # evenly over the levels, so parameters sit at the coarse levels, where they are cheap; global
    # attention only at 8x8 and 4x4 (at 16x16 its 33 x 256 tokens would double the sampling time).
    "embedded": {
        "resolution": 256,
        "unet": {
            "sample_size": 32,
            "block_out_channels": (32, 48, 96, 192),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "layers_per_block": (1, 1, 2, 2),
            "attention_head_dim": (1, 1, 3, 3),  # heads: 32, 48, 32, 64 channels each
            "cross_attention_dim": 256,
            "norm_num_groups": 16,
            "global_attention_levels": (2, 3),
            "reduce_input": False,  # trained from scratch: no 4-channel input bottleneck
        },
        "vae": {"block_out_channels": (16, 32, 64, 128), "layers_per_block": 1, "norm_num_groups": 8},
        "image_encoder": {"image_size": 128, "channels": (32, 64, 128, 256), "tokens_per_side": 4, "embed_dim": 256},
        # DDPM, not DPM-Solver++: on the trained model's 50 held-out objects (1 input, guidance 6)
        # DDPM at 40 steps beat DPM-Solver++ at 30 on PSNR for 36 and Chamfer for 33 of them, at
        # the same cost per step (BENCHMARKS.md, session 6)
        "scheduler": "ddpm",
    },
    # MVDiffusion++ as published: SD 2 inpainting-sized UNet (~866M parameters), SD VAE with an
    # alpha channel, CLIP ViT-H/14 image encoder, 512 px, 64x64x4 latents, DDPM sampling.
    "paper": {
        "resolution": 512,
        "unet": {
            "sample_size": 64,
            "block_out_channels": (320, 640, 1280, 1280),
            "down_block_types": _SD_DOWN,
            "up_block_types": _SD_UP,
            "layers_per_block": 2,
            "attention_head_dim": (5, 10, 20, 20),
            "cross_attention_dim": 1024,
            "norm_num_groups": 32,
        },
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32},
        "image_encoder": {
            "clip": {  # OpenCLIP ViT-H/14 as used by SD 2 image variations
                "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
                "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu",
            }
        },
        "scheduler": "ddpm",
    },
}


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        raise MVDPPError(BAD_INPUT, f"unknown model preset {name!r}", f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_unet(name: str, **overrides):
    """A randomly initialised multi-view UNet of preset ``name`` (overrides go to its config)."""
    from .models.multiview_unet import MultiViewUNetModel

    return MultiViewUNetModel(**{**get_preset(name)["unet"], **overrides})


def build_vae(name: str):
    from .models.mask_vae import build_mask_vae

    preset = get_preset(name)
    return build_mask_vae(sample_size=preset["resolution"], **preset["vae"])


def build_image_encoder(name: str):
    encoder_config = get_preset(name)["image_encoder"]
    if "clip" in encoder_config:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection(CLIPVisionConfig(**encoder_config["clip"]))
    from .models.image_encoder import SmallImageEncoder

    return SmallImageEncoder(**encoder_config)


def build_pipeline(name: str, seed: int = 0, prediction_type: str = "epsilon", scheduler: str | None = None,
                   device=None):
    """A randomly initialised ``MVDiffusionPPPipeline`` of preset ``name`` (same seed and device,
    same weights). ``device``: initialise the weights directly there (the paper preset's 1.6B
    random parameters take a while on a CPU); default the CPU."""
    import torch

    from .pipelines.pipeline_mvdpp import MVDiffusionPPPipeline
    from .pipelines.schedulers import make_scheduler

    preset = get_preset(name)
    device = torch.device(device or "cpu")
    cuda_ids = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_ids), device:
        torch.manual_seed(seed)
        unet, vae, image_encoder = build_unet(name), build_vae(name), build_image_encoder(name)
    pipe = MVDiffusionPPPipeline(
        unet=unet.eval(), vae=vae.eval(), image_encoder=image_encoder.eval(),
        scheduler=make_scheduler(scheduler or preset["scheduler"], prediction_type=prediction_type),
    )
    return pipe
