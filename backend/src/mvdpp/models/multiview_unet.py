"""The MVDiffusion++ multi-view UNet (PAPER.md, "Architecture").

One batch holds ``B`` objects x ``V`` views each, laid out object-major: ``(B*V, 2C+1, h, w)``
with each object's condition views first, then its generation views. Per view:

    concat(noisy latent C, branch mask 1, condition latent C) --1x1 conv--> C --> UNet body

(the paper's 1x1 conv lets a Stable Diffusion body see the 4-channel input it was trained on;
``reduce_input=False`` drops it for models trained from scratch, whose body's first conv then
reads all 2C+1 channels: through 4 channels a condition view's clean latent and its noisy latent
cannot both pass, and the first embedded model, trained with the bottleneck, denoised its
condition views barely better than its generation views although it was given their clean latent)

The body is a diffusers ``UNet2DConditionModel`` whose self-attention layers attend across all
views of an object (``MultiViewAttnProcessor``), whose cross-attention reads the condition
images' embeddings, and whose timestep embedding gets ``scale * view_embedding[view_id]`` added
(42 slots: rig views 0-31, condition views 32-41).

The view embedding is the network's only way to know which rig pose a view has. The paper
starts ``scale`` at zero with a random table; measured here, that pair cannot learn (the
gradient of each factor is proportional to the other): after 3,001 steps of the embedded recipe
the scale was -0.002 and the generated views ignored their pose. So the scale starts at one and
the table at small random values (from scratch) or at zero (from Stable Diffusion, which then
starts as exactly that model); ``reset_view_embedding`` does both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import UNet2DConditionModel
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..rig import MAX_CONDITION_VIEWS, NUM_RIG_VIEWS
from .multiview_attention import multiview_processors

#: View-embedding slots: rig views 0..31, then condition views 32..41.
NUM_VIEW_SLOTS = NUM_RIG_VIEWS + MAX_CONDITION_VIEWS
FIRST_CONDITION_SLOT = NUM_RIG_VIEWS
#: Standard deviation of a fresh view-embedding table: about the size of the embedded preset's
#: timestep embedding at initialisation (0.15), so views differ from the first step on without
#: drowning the timestep.
VIEW_EMBEDDING_INIT_STD = 0.1
#: Below this |scale| the view embedding is "dead" (see the module doc).
DEAD_VIEW_EMBEDDING_SCALE = 1e-2


@dataclass
class MultiViewUNetOutput(BaseOutput):
    sample: torch.Tensor  # (B*V, C, h, w): the prediction (epsilon or v) for every view


class MultiViewUNetModel(ModelMixin, ConfigMixin):
    """Multi-view denoiser. ``attention_head_dim`` follows diffusers' historical meaning: it is the
    number of heads per block (SD 2: 5/10/20/20 -> 64 channels per head)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,
        latent_channels: int = 4,
        block_out_channels: tuple = (320, 640, 1280, 1280),
        down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types: tuple = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type: str = "UNetMidBlock2DCrossAttn",
        layers_per_block: int = 2,
        attention_head_dim: tuple = (5, 10, 20, 20),
        cross_attention_dim: int = 1024,
        use_linear_projection: bool = True,
        norm_num_groups: int = 32,
        #: resolution levels (0 = full latent resolution) whose self-attention spans all views;
        #: None = every level, as in the paper.
        global_attention_levels: tuple | None = None,
        #: constant branch-mask channel: condition views vs generation views.
        condition_branch_value: float = 0.0,
        generation_branch_value: float = 1.0,
        num_view_slots: int = NUM_VIEW_SLOTS,
        #: True: the paper's 1x1 conv from 2C+1 to C channels before the body (Stable Diffusion
        #: init); False: the body's first conv takes the 2C+1 channels itself (module doc).
        reduce_input: bool = True,
        #: any further UNet2DConditionModel settings (e.g. those of a Stable Diffusion checkpoint
        #: that differ from diffusers' defaults, such as upcast_attention).
        extra_body_config: dict | None = None,
    ):
        super().__init__()
        input_channels = 2 * latent_channels + 1
        if reduce_input:
            self.input_reduce = nn.Conv2d(input_channels, latent_channels, kernel_size=1)
        else:
            self.input_reduce = nn.Identity()
        self.body = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=latent_channels if reduce_input else input_channels,
            out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            mid_block_type=mid_block_type,
            layers_per_block=layers_per_block,
            attention_head_dim=tuple(attention_head_dim) if not isinstance(attention_head_dim, int) else attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            use_linear_projection=use_linear_projection,
            norm_num_groups=norm_num_groups,
            # The view embedding arrives as ready-made "class labels" added to the time embedding.
            class_embed_type="identity",
            **(extra_body_config or {}),
        )
        time_embed_dim = self.body.time_embedding.linear_2.out_features
        self.view_embedding = nn.Embedding(num_view_slots, time_embed_dim)
        self.view_embedding_scale = nn.Parameter(torch.ones(1))
        self.reset_view_embedding()
        self.reset_input_reduce()
        self.set_multiview_attention()

    def reset_view_embedding(self, std: float = VIEW_EMBEDDING_INIT_STD) -> None:
        """Scale one, table N(0, std); ``std=0`` makes the view embedding add nothing yet (a
        pretrained body keeps its behaviour) while its gradient still flows (module doc)."""
        with torch.no_grad():
            self.view_embedding_scale.fill_(1.0)
            if std > 0:
                self.view_embedding.weight.normal_(0.0, std)
            else:
                self.view_embedding.weight.zero_()

    @property
    def view_embedding_is_dead(self) -> bool:
        """True for a (paper-style) zero scale that the table's gradient cannot revive."""
        return abs(float(self.view_embedding_scale.detach())) < DEAD_VIEW_EMBEDDING_SCALE

    def reset_input_reduce(self) -> None:
        """Start the 1x1 input conv as "pass the noisy latent through, ignore mask and condition",
        so a pretrained body sees exactly the input it was trained on; training learns the rest."""
        if not self.config.reduce_input:
            return
        c = self.config.latent_channels
        with torch.no_grad():
            self.input_reduce.weight.zero_()
            self.input_reduce.weight[:, :c, 0, 0] = torch.eye(c)
            self.input_reduce.bias.zero_()

    def set_multiview_attention(self) -> None:
        levels = self.config.global_attention_levels
        processors = multiview_processors(
            self.body.attn_processors.keys(),
            num_levels=len(self.config.block_out_channels),
            global_levels=None if levels is None else set(levels),
        )
        self.body.set_attn_processor(processors)

    def set_attention_backend(self, backend: str | None) -> None:
        """Run every attention layer on one SDPA backend ("flash", "cudnn", "efficient", "math";
        None or "auto": PyTorch's choice). A runtime setting, not part of the config: the
        backends compute the same attention and differ only in speed and rounding."""
        from .multiview_attention import check_attention_backend

        backend = check_attention_backend(backend)
        for processor in self.body.attn_processors.values():
            processor.backend = backend

    @property
    def num_attention_heads(self) -> tuple:
        heads = self.config.attention_head_dim
        return tuple(heads) if not isinstance(heads, int) else (heads,) * len(self.config.block_out_channels)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        view_ids: torch.Tensor,
        num_views: int,
        return_dict: bool = True,
    ):
        """
        sample: (B*V, 2C+1, h, w) per-view inputs (see ``mvdpp.pipelines.inputs``).
        timestep: (B*V,) or scalar.
        encoder_hidden_states: (B*V, T, D) condition-image tokens, the same for all views of an object.
        view_ids: (B*V,) long, view-embedding slots.
        num_views: V, views per object (the global attention's group size).
        """
        if sample.shape[0] % num_views:
            raise ValueError(f"batch of {sample.shape[0]} views is not a whole number of {num_views}-view objects")
        hidden = self.input_reduce(sample)
        view_emb = self.view_embedding(view_ids) * self.view_embedding_scale
        out = self.body(
            hidden,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            class_labels=view_emb.to(hidden.dtype),
            cross_attention_kwargs={"num_views": int(num_views)},
            return_dict=False,
        )[0]
        return MultiViewUNetOutput(sample=out) if return_dict else (out,)


def fold_input_reduce(unet: MultiViewUNetModel) -> MultiViewUNetModel:
    """The same network without the input bottleneck: the 1x1 conv folded into the body's first
    conv (``reduce_input=False``), which can then learn to use all 2C+1 input channels. Outputs
    are equal except within one pixel of the border, where the body's zero padding used to pad
    the 1x1 conv's output (its bias) and now pads its input."""
    if not unet.config.reduce_input:
        return unet
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    folded = MultiViewUNetModel.from_config({**config, "reduce_input": False})
    state = dict(unet.state_dict())
    reduce_weight = state.pop("input_reduce.weight")[:, :, 0, 0].float()  # (C, 2C+1)
    reduce_bias = state.pop("input_reduce.bias").float()  # (C,)
    conv_weight = state["body.conv_in.weight"].float()  # (O, C, k, k)
    state["body.conv_in.weight"] = torch.einsum("ocij,cn->onij", conv_weight, reduce_weight)
    state["body.conv_in.bias"] = state["body.conv_in.bias"].float() + torch.einsum("ocij,c->o", conv_weight, reduce_bias)
    folded.load_state_dict(state)
    folded = folded.to(unet.device)
    return folded if unet.dtype == torch.float32 else folded.to(unet.dtype)
