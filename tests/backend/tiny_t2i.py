"""A tiny, randomly initialised Stable Diffusion text-to-image pipeline, built and saved locally.

Nothing can be downloaded in the tests, so the real loading and generation code of
mvdpp.service.text_to_image runs against this: same classes as SD 1.x/2.x, toy sizes.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path


def byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE tokenizers (CLIP's) map bytes to."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_tiny_clip_vocab(folder: Path) -> tuple[Path, Path]:
    """vocab.json with single characters (plain and word-final) and an empty merges list."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = byte_characters()
    vocab = {token: index for index, token in enumerate(tokens + [t + "</w>" for t in tokens])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_file, merges_file


def build_tiny_text_to_image(folder: Path, seed: int = 0) -> Path:
    """Save a tiny StableDiffusionPipeline (safetensors) into ``folder``; 64 px images."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_file, merges_file = write_tiny_clip_vocab(folder.parent / f"{folder.name}-vocab")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=16,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, norm_num_groups=4, sample_size=64)
    scheduler = EulerDiscreteScheduler(steps_offset=1, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


#: A stand-in for the optional rembg package (the input path's segmentation plug-in): random
#: weights draw noise, so the tests that need an object cut out a centred disc.
FAKE_REMBG = textwrap.dedent(
    """
    # A stand-in for the rembg package: the object is a centred disc.
    import numpy as np
    from PIL import Image

    def remove(image):
        rgb = np.asarray(image.convert("RGB"))
        h, w = rgb.shape[:2]
        y, x = np.mgrid[:h, :w]
        disc = ((y - h / 2) ** 2 + (x - w / 2) ** 2) < (0.3 * min(h, w)) ** 2
        return Image.fromarray(np.dstack([rgb, (disc * 255).astype(np.uint8)]), "RGBA")
    """
)
