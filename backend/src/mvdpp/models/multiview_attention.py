"""Attention processor that lets the self-attention of a UNet attend across all views of an object.

The UNet runs every view of every object as one batch of ``B * V`` images. A standard
self-attention layer then only mixes tokens inside one view. For MVDiffusion++'s global
self-attention (PAPER.md, "In every UNet block") the same projection weights are applied to the
concatenated tokens of all ``V`` views of one object: ``(B*V, HW, C) -> (B, V*HW, C)``. No
positional information distinguishes the views here, so the layer is equivariant to permuting
views; the per-view index embedding is what tells views apart.
"""

from __future__ import annotations

import contextlib

import torch.nn.functional as F

#: ``--attention-backend`` names -> torch.nn.attention.SDPBackend member names. "auto" leaves the
#: choice to PyTorch's own order of preference.
ATTENTION_BACKENDS = {
    "auto": None,
    "flash": "FLASH_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
}


def check_attention_backend(name: str | None) -> str | None:
    """``name`` as a processor stores it: None for PyTorch's choice ("auto" or None); raises
    ValueError for a name not in ATTENTION_BACKENDS."""
    if name is not None and name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; use one of {', '.join(ATTENTION_BACKENDS)}")
    return None if name == "auto" else name


def attention_backend_context(name: str | None):
    """A context in which scaled_dot_product_attention uses only backend ``name`` (None/"auto":
    PyTorch's choice)."""
    name = check_attention_backend(name)
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, ATTENTION_BACKENDS[name])])


class MultiViewAttnProcessor:
    """Scaled-dot-product attention; ``across_views=True`` joins the tokens of an object's views.

    Used for every attention layer of the multi-view UNet so that all of them accept the
    ``num_views`` keyword (diffusers passes ``cross_attention_kwargs`` to every processor).
    Cross-attention layers and per-view self-attention layers ignore it.
    """

    def __init__(self, across_views: bool, backend: str | None = None):
        self.across_views = across_views
        #: SDPA backend for this layer (ATTENTION_BACKENDS); None = PyTorch's choice
        self.backend = backend

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, num_views: int = 1):
        if attention_mask is not None:
            raise ValueError("the multi-view UNet uses no attention masks")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if hidden_states.ndim != 3:
            raise ValueError(f"expected (batch, tokens, channels) hidden states, got shape {tuple(hidden_states.shape)}")
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        is_self_attention = encoder_hidden_states is None
        joined = self.across_views and is_self_attention and num_views > 1
        batch_views, tokens, channels = hidden_states.shape
        if joined:
            if batch_views % num_views:
                raise ValueError(f"batch of {batch_views} images is not a whole number of {num_views}-view objects")
            hidden_states = hidden_states.reshape(batch_views // num_views, num_views * tokens, channels)
        if is_self_attention:
            context = hidden_states
        else:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states

        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        heads = attn.heads
        head_dim = key.shape[-1] // heads

        def split_heads(x):  # (N, L, heads * d) -> (N, heads, L, d)
            return x.reshape(x.shape[0], -1, heads, head_dim).transpose(1, 2)

        query, key, value = split_heads(query), split_heads(key), split_heads(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        with attention_backend_context(self.backend):
            out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        out = out.transpose(1, 2).reshape(out.shape[0], -1, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if joined:
            out = out.reshape(batch_views, tokens, -1)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attention_level(processor_name: str, num_levels: int) -> int:
    """Resolution level (0 = full latent resolution) of an attention layer, from its diffusers name."""
    parts = processor_name.split(".")
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "up_blocks":
        return num_levels - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return num_levels - 1
    raise ValueError(f"unexpected attention layer {processor_name!r}")


def multiview_processors(processor_names, num_levels: int, global_levels) -> dict:
    """Processors for every attention layer: global across views on self-attention (attn1) layers
    at the chosen levels (``None`` = all levels), per-view elsewhere."""
    processors = {}
    for name in processor_names:
        is_self = ".attn1." in name
        level = attention_level(name, num_levels)
        across = is_self and (global_levels is None or level in global_levels)
        processors[name] = MultiViewAttnProcessor(across_views=across)
    return processors
