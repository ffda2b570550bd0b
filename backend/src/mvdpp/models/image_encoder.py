"""Image encoders that turn condition views into cross-attention tokens.

Two kinds are supported, and ``encode_condition_images`` hides the difference:

* ``transformers.CLIPVisionModelWithProjection`` (the ``paper`` preset, loaded from a checkpoint):
  one token per condition image, its projected image embedding, as Stable Diffusion image
  variation / Zero123 do, so SD 2's 1024-wide cross-attention matches ViT-H/14's projection.
* ``SmallImageEncoder``: a small trainable CNN for the small presets, a grid of tokens per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

#: CLIP's input normalisation (OpenAI / OpenCLIP ViT models).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class SmallImageEncoder(ModelMixin, ConfigMixin):
    """RGBA view in [-1, 1] -> ``tokens_per_side**2`` tokens of width ``embed_dim``.

    Strided convs down to a coarse grid, adaptive pooling to a fixed token grid, then a linear
    projection plus a learnt position embedding so tokens know where in the image they came from.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        image_size: int = 128,
        channels: tuple = (32, 64, 128, 256),
        tokens_per_side: int = 4,
        embed_dim: int = 256,
        norm_num_groups: int = 8,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.GroupNorm(min(norm_num_groups, width), width), nn.SiLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(previous, embed_dim)
        self.position = nn.Parameter(torch.zeros(tokens_per_side * tokens_per_side, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)

    @property
    def num_tokens(self) -> int:
        return self.config.tokens_per_side ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 4, H, W) in [-1, 1] -> (N, tokens, embed_dim)."""
        size = self.config.image_size
        if images.shape[-1] != size or images.shape[-2] != size:
            # float32: antialiased resizing has no half-precision kernels on every device
            images = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=True).to(self.dtype)
        grid = F.adaptive_avg_pool2d(self.features(images), self.config.tokens_per_side)
        tokens = grid.flatten(2).transpose(1, 2)
        return self.norm(self.project(tokens) + self.position)


def _is_clip(encoder) -> bool:
    return type(encoder).__name__.startswith("CLIPVision")


def image_embedding_dim(encoder) -> int:
    """Width of the tokens ``encoder`` produces (the UNet's ``cross_attention_dim``)."""
    if _is_clip(encoder):
        return encoder.config.projection_dim
    return encoder.config.embed_dim


def tokens_per_image(encoder) -> int:
    return 1 if _is_clip(encoder) else encoder.num_tokens


def encode_condition_images(encoder, images: torch.Tensor) -> torch.Tensor:
    """Condition views (N, 4, H, W) RGBA in [-1, 1] -> tokens (N, T, D).

    CLIP sees the RGB composited over white (the project's images already are) at its own
    resolution with its own normalisation, done here in torch so it is differentiable and
    identical in training and sampling.
    """
    dtype = next(encoder.parameters()).dtype
    if not _is_clip(encoder):
        return encoder(images.to(dtype))
    size = encoder.config.image_size
    rgb = (images[:, :3].float() + 1.0) / 2.0  # float32: see SmallImageEncoder.forward
    rgb = F.interpolate(rgb, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=rgb.device).view(1, 3, 1, 1)
    return encoder(pixel_values=((rgb - mean) / std).to(dtype)).image_embeds.unsqueeze(1)
