"""diffusers models of MVDiffusion++ (imports torch; import only where the model is used)."""

from .image_encoder import SmallImageEncoder, encode_condition_images, image_embedding_dim, tokens_per_image
from .mask_vae import build_mask_vae, decode_rgba, encode_rgba, expand_rgb_vae_to_rgba, white_rgba
from .multiview_attention import MultiViewAttnProcessor
from .multiview_unet import FIRST_CONDITION_SLOT, NUM_VIEW_SLOTS, MultiViewUNetModel, MultiViewUNetOutput

__all__ = [
    "FIRST_CONDITION_SLOT", "NUM_VIEW_SLOTS", "MultiViewAttnProcessor", "MultiViewUNetModel", "MultiViewUNetOutput",
    "SmallImageEncoder", "build_mask_vae", "decode_rgba", "encode_condition_images", "encode_rgba",
    "expand_rgb_vae_to_rgba", "image_embedding_dim", "tokens_per_image", "white_rgba",
]
