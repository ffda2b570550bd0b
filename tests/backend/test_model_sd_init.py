"""Initialising the multi-view model from a Stable Diffusion inpainting checkpoint + CLIP image
encoder, tested on a tiny random checkpoint with the same folder layout (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from mvdpp.errors import MVDPPError  # noqa: E402
from mvdpp.models import expand_rgb_vae_to_rgba  # noqa: E402
from mvdpp.pipelines import MVDiffusionPPPipeline  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd_checkpoint(tmp_path_factory):
    """A tiny SD-2-inpainting-layout folder (unet/ with 9 input channels, vae/, scheduler/) and a
    tiny CLIP vision model with projection."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sd")
    UNet2DConditionModel(
        sample_size=8, in_channels=9, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(1, 2), cross_attention_dim=32, use_linear_projection=True, norm_num_groups=8,
        upcast_attention=True,  # a non-default setting that must survive the conversion
    ).save_pretrained(root / "sd" / "unet")
    AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    ).save_pretrained(root / "sd" / "vae")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon").save_pretrained(root / "sd" / "scheduler")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        projection_dim=32,
    )).save_pretrained(root / "clip")
    return root


def test_unet_starts_as_the_sd_inpainting_unet(sd_checkpoint):
    """With one view per object, the converted UNet equals the SD inpainting UNet given an empty
    mask and masked-image latent (the view-embedding table is 0, the 1x1 conv passes the latent)."""
    from diffusers import UNet2DConditionModel

    from mvdpp.pipelines.from_stable_diffusion import multiview_unet_from_sd

    sd_unet = UNet2DConditionModel.from_pretrained(sd_checkpoint / "sd" / "unet").eval()
    unet = multiview_unet_from_sd(sd_unet).eval()
    assert unet.body.config.upcast_attention is True
    assert float(unet.view_embedding.weight.detach().abs().max()) == 0.0 and not unet.view_embedding_is_dead
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 8, 8, generator=g)
    tokens = torch.randn(3, 2, 32, generator=g)
    t = torch.tensor([10, 500, 900])
    with torch.no_grad():
        expected = sd_unet(torch.cat([latents, torch.zeros(3, 5, 8, 8)], 1), t, encoder_hidden_states=tokens).sample
        mask_and_condition = torch.randn(3, 5, 8, 8, generator=g)  # ignored at initialisation
        got = unet(torch.cat([latents, mask_and_condition], 1), t, tokens, view_ids=torch.tensor([0, 33, 5]), num_views=1).sample
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_pipeline_from_stable_diffusion_samples_and_round_trips(sd_checkpoint, tmp_path):
    pipe = MVDiffusionPPPipeline.from_stable_diffusion(sd_checkpoint / "sd", sd_checkpoint / "clip", scheduler="ddpm",
                                                      prediction_type="v_prediction")
    assert type(pipe.image_encoder).__name__ == "CLIPVisionModelWithProjection"
    assert pipe.vae.config.in_channels == 4 and pipe.vae.config.out_channels == 4
    assert pipe.scheduler_name == "ddpm" and pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.resolution == 64
    image = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
    image.paste((200, 30, 30, 255), (16, 16, 48, 48))
    kwargs = dict(num_inference_steps=2, guidance_scale=2.0, view_ids=[0, 4], output_type="np")
    a = pipe([image], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert a.shape == (2, 64, 64, 4)
    pipe.save_pretrained(tmp_path)
    loaded = MVDiffusionPPPipeline.from_pretrained(tmp_path)
    assert np.array_equal(a, loaded([image], generator=torch.Generator().manual_seed(0), **kwargs).images)
    # bf16, as on a GPU, through the CLIP path too
    half = loaded.to(dtype=torch.bfloat16)([image], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert half.shape == a.shape


def test_rgba_vae_keeps_the_rgb_vae_on_colour(sd_checkpoint):
    from diffusers import AutoencoderKL

    rgb_vae = AutoencoderKL.from_pretrained(sd_checkpoint / "sd" / "vae").eval()
    rgba_vae = expand_rgb_vae_to_rgba(rgb_vae).eval()
    rgba = torch.rand(2, 4, 64, 64) * 2 - 1
    with torch.no_grad():
        expected_latent = rgb_vae.encode(rgba[:, :3]).latent_dist.mean
        latent = rgba_vae.encode(rgba).latent_dist.mean
        torch.testing.assert_close(latent, expected_latent)  # the alpha input starts ignored
        decoded_rgb, decoded = rgb_vae.decode(latent).sample, rgba_vae.decode(latent).sample
    torch.testing.assert_close(decoded[:, :3], decoded_rgb)
    torch.testing.assert_close(decoded[:, 3], -decoded_rgb.mean(dim=1), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        expand_rgb_vae_to_rgba(rgba_vae)


def test_mismatched_clip_width_is_a_clear_error(sd_checkpoint, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                   num_attention_heads=2, image_size=32, patch_size=8,
                                                   projection_dim=48)).save_pretrained(tmp_path / "clip48")
    with pytest.raises(MVDPPError, match="width"):
        MVDiffusionPPPipeline.from_stable_diffusion(sd_checkpoint / "sd", tmp_path / "clip48")
    with pytest.raises(MVDPPError):
        MVDiffusionPPPipeline.from_stable_diffusion(tmp_path / "missing", tmp_path / "clip48")
