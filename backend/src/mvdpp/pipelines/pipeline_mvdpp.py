"""``MVDiffusionPPPipeline``: 1-10 unposed RGBA views of an object -> views at the 32 rig poses."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..errors import BAD_INPUT, OUT_OF_MEMORY, MVDPPError
from ..models.mask_vae import decode_rgba
from ..protocol import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_RESCALE
from ..rig import MAX_CONDITION_VIEWS, NUM_RIG_VIEWS, rig_cameras
from .inputs import build_unet_inputs, encode_condition, split_views
from .schedulers import make_scheduler, scheduler_name


def _import_rescale_noise_cfg():
    """diffusers' guidance rescale, from its Stable Diffusion pipeline module. Importing that
    module makes transformers look up CLIP's and SigLIP's image processors, which without
    torchvision (not needed here) prints a two-line "install torchvision" warning that every
    `mvdpp` command and the Blender extension's log would show; the PIL fallback it takes
    instead is fine for us, so that one logger is quiet during the import."""
    from transformers.utils import logging as transformers_logging

    logger = transformers_logging.get_logger("transformers.utils.import_utils")
    level = logger.level
    logger.setLevel(transformers_logging.ERROR)
    try:
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
    finally:
        logger.setLevel(level)
    return rescale_noise_cfg


rescale_noise_cfg = _import_rescale_noise_cfg()


def check_guidance_interval(interval) -> tuple[float, float]:
    """(low, high) as floats with 0 <= low < high <= 1, or a clear error."""
    try:
        low, high = (float(value) for value in interval)
    except (TypeError, ValueError):
        raise MVDPPError(BAD_INPUT, f"guidance_interval={interval!r} is not two numbers",
                         "give (low, high) with 0 <= low < high <= 1, e.g. (0.3, 1.0); (0, 1) guides every step") from None
    if not 0.0 <= low < high <= 1.0:
        raise MVDPPError(BAD_INPUT, f"guidance_interval=({low}, {high}) is not an interval inside 0..1",
                         "give (low, high) with 0 <= low < high <= 1, e.g. (0.3, 1.0); (0, 1) guides every step")
    return low, high


def rescale_guided_prediction(guided: torch.Tensor, conditional: torch.Tensor, rescale: float) -> torch.Tensor:
    """Classifier-free guidance rescale (Lin et al., "Common Diffusion Noise Schedules and Sample
    Steps are Flawed", sec. 3.4): a large guidance scale inflates the prediction's spread, which
    over-exposes the images of zero-terminal-SNR models such as the embedded one. diffusers'
    ``rescale_noise_cfg`` with every view as one image: each view's guided prediction is scaled to
    the conditional prediction's standard deviation, then mixed back with the plain guided one by
    ``rescale`` (0 = plain guidance). Predictions are (B, V, C, H, W)."""
    if rescale <= 0.0:
        return guided
    views = guided.shape[:2]
    return rescale_noise_cfg(guided.flatten(0, 1), conditional.flatten(0, 1), rescale).unflatten(0, views)


def decoded_to_uint8(rgba: torch.Tensor) -> np.ndarray:
    """Decoded RGBA (N, 4, H, W) in [-1, 1] -> the pipeline's uint8 views (N, H, W, 4)."""
    array = ((rgba.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    # The decoded mask cuts the object out: where it says "background", the colour is white
    # (the project's RGBA convention), whatever the RGB decoder produced there.
    array[array[..., 3] == 0, :3] = 255
    return array


@dataclass
class MVDiffusionPPPipelineOutput(BaseOutput):
    images: object  # list of PIL RGBA | uint8 (N, H, W, 4) | latents (N, C, h, w), in view_ids order
    cameras: list  # mvdpp.rig.Camera of each view


class MVDiffusionPPPipeline(DiffusionPipeline):
    """Components: ``unet`` (MultiViewUNetModel), ``vae`` (RGBA AutoencoderKL), ``image_encoder``
    (CLIPVisionModelWithProjection or SmallImageEncoder) and ``scheduler``."""

    model_cpu_offload_seq = "image_encoder->unet->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet, vae, image_encoder, scheduler):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, image_encoder=image_encoder, scheduler=scheduler)
        # A backend reports progress through callback_on_step_end, not through tqdm on stderr;
        # set_progress_bar_config(disable=False) brings the bar back.
        self.set_progress_bar_config(disable=True)

    @classmethod
    def from_stable_diffusion(cls, sd_path, image_encoder_path=None, **kwargs) -> "MVDiffusionPPPipeline":
        """The ``paper`` model initialised from a Stable Diffusion 2 inpainting checkpoint and a CLIP
        image encoder (see ``mvdpp.pipelines.from_stable_diffusion`` for how)."""
        from .from_stable_diffusion import pipeline_from_stable_diffusion

        return pipeline_from_stable_diffusion(cls, sd_path, image_encoder_path, **kwargs)

    # ----------------------------------------------------------------------------- properties
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Side of the input and output images in pixels."""
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def num_timesteps(self) -> int | None:
        """Denoising steps of the current (or last) call, as in diffusers' pipelines."""
        return getattr(self, "_num_timesteps", None)

    @property
    def scheduler_name(self) -> str | None:
        return scheduler_name(self.scheduler)

    def use_scheduler(self, name: str, prediction_type: str | None = None,
                      zero_terminal_snr: bool | None = None) -> "MVDiffusionPPPipeline":
        """Switch sampler ("ddpm", "ddim", "dpm++", "euler") keeping the noise schedule and prediction
        type unless ``prediction_type`` / ``zero_terminal_snr`` say otherwise."""
        self.scheduler = make_scheduler(name, like=self.scheduler, prediction_type=prediction_type,
                                        zero_terminal_snr=zero_terminal_snr)
        return self

    # ----------------------------------------------------------------------------- inputs
    def images_to_tensor(self, images) -> torch.Tensor:
        """PIL RGBA (or RGB, taken as opaque) images -> (N, 4, R, R) in [-1, 1] at the model resolution."""
        from PIL import Image

        if isinstance(images, Image.Image):
            images = [images]
        if not isinstance(images, (list, tuple)) or not images:
            raise MVDPPError(BAD_INPUT, "no input images were given", "pass a list of 1 to 10 PIL RGBA images")
        if len(images) > MAX_CONDITION_VIEWS:
            raise MVDPPError(BAD_INPUT, f"{len(images)} input images; the model takes at most {MAX_CONDITION_VIEWS}",
                             f"pass the {MAX_CONDITION_VIEWS} best views")
        size = self.resolution
        arrays = []
        for i, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise MVDPPError(BAD_INPUT, f"input {i} is a {type(image).__name__}, not a PIL image",
                                 "load images with PIL.Image.open and convert('RGBA')")
            if image.mode not in ("RGBA", "RGB"):
                raise MVDPPError(BAD_INPUT, f"input {i} has mode {image.mode}, not RGBA",
                                 "convert it with image.convert('RGBA') (alpha = object mask)")
            if image.width < 1 or image.height < 1:
                raise MVDPPError(BAD_INPUT, f"input {i} is empty", "pass a non-empty image")
            rgba = image.convert("RGBA")
            if rgba.width != rgba.height:  # pad to a square around the centre, never stretch the object
                side = max(rgba.size)
                square = Image.new("RGBA", (side, side), (255, 255, 255, 0))
                square.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
                rgba = square
            if rgba.size != (size, size):
                rgba = rgba.resize((size, size), Image.Resampling.BICUBIC)
            array = np.asarray(rgba, dtype=np.float32).copy()
            # Views are composited over white (docs/architecture.md); make fully transparent
            # pixels white so hidden colours under alpha 0 cannot leak in.
            array[array[..., 3] == 0, :3] = 255.0
            arrays.append(array)
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return batch / 127.5 - 1.0

    @staticmethod
    def check_view_ids(view_ids) -> list[int]:
        if view_ids is None:
            return list(range(NUM_RIG_VIEWS))
        try:
            ids = [int(v) for v in view_ids]
        except (TypeError, ValueError):
            raise MVDPPError(BAD_INPUT, f"view_ids {view_ids!r} is not a list of integers", f"use indices 0-{NUM_RIG_VIEWS - 1}") from None
        if not ids:
            raise MVDPPError(BAD_INPUT, "view_ids is empty", f"pass None for all {NUM_RIG_VIEWS} views or a subset of 0-{NUM_RIG_VIEWS - 1}")
        if any(not 0 <= v < NUM_RIG_VIEWS for v in ids) or len(set(ids)) != len(ids):
            raise MVDPPError(BAD_INPUT, f"view_ids {ids} must be distinct rig indices", f"use indices 0-{NUM_RIG_VIEWS - 1}")
        return ids

    # ----------------------------------------------------------------------------- denoiser
    def _predict(self, cond_inputs, uncond_inputs, batch_guidance: bool):
        """Model predictions (conditional, unconditional or None) for one step."""
        if uncond_inputs is None:
            return self.unet(**cond_inputs.as_kwargs()).sample, None, batch_guidance
        if batch_guidance:
            try:
                both = self.unet(**cond_inputs.cat(uncond_inputs).as_kwargs()).sample
                return *both.chunk(2), True
            except torch.OutOfMemoryError:
                # Not enough memory for both passes at once: run them one after the other from now on.
                torch.cuda.empty_cache()
        cond = self.unet(**cond_inputs.as_kwargs()).sample
        uncond = self.unet(**uncond_inputs.as_kwargs()).sample
        return cond, uncond, False

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self,
        images,
        num_inference_steps: int = 30,
        guidance_scale: float = DEFAULT_GUIDANCE,
        guidance_rescale: float = DEFAULT_GUIDANCE_RESCALE,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
        view_ids=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
        output_type: str = "pil",
        scheduler: str | None = None,
        decode_chunk_size: int = 8,
        batch_guidance: bool = True,
        return_dict: bool = True,
    ):
        """Generate the rig views ``view_ids`` (default all 32) of the object shown in ``images``.

        images: 1-10 PIL RGBA views, object centred; the first defines azimuth 0.
        guidance_scale: classifier-free guidance weight; <= 1 disables guidance (one pass per step).
        guidance_rescale: 0-1, how far each view's guided prediction is brought back to the
            conditional prediction's spread (``rescale_guided_prediction``); 0 = plain guidance.
        guidance_interval: (low, high), fractions of the training noise schedule (timestep /
            number of training timesteps: 0 = clean, 1 = pure noise). Guidance applies at the
            steps whose timestep lies in it; the others use the conditional prediction alone,
            one pass instead of two (Kynkaanniemi et al. 2024 guide only part of the schedule).
            Default (0, 1): every step.
        generator: torch.Generator for reproducible noise.
        callback_on_step_end: ``fn(pipe, step, timestep, kwargs) -> dict`` after every step; may
            return a new ``latents``; raising ``mvdpp.errors.JobCancelled`` cancels.
        output_type: "pil" (list of RGBA images), "np" (uint8 (N, H, W, 4)) or "latent".
        scheduler: optionally sample with another sampler ("ddpm", "ddim", "dpm++", "euler")
            for this call only.
        decode_chunk_size: views the VAE decodes at once.
        batch_guidance: run the conditional and unconditional passes as one batch (falls back
            to two passes when the GPU runs out of memory).
        """
        if output_type not in ("pil", "np", "latent"):
            raise MVDPPError(BAD_INPUT, f"unknown output_type {output_type!r}", "use 'pil', 'np' or 'latent'")
        if int(num_inference_steps) < 1:
            raise MVDPPError(BAD_INPUT, f"num_inference_steps={num_inference_steps}", "use at least 1 step")
        if not 0.0 <= float(guidance_rescale) <= 1.0:
            raise MVDPPError(BAD_INPUT, f"guidance_rescale={guidance_rescale} is not in 0..1",
                             f"0 turns it off; {DEFAULT_GUIDANCE_RESCALE} is the default")
        low, high = check_guidance_interval(guidance_interval)
        ids = self.check_view_ids(view_ids)
        sampler = make_scheduler(scheduler, like=self.scheduler) if scheduler else self.scheduler
        # The sampler state stays in float32 whatever the models run in (bf16/fp16 on GPUs):
        # multistep solvers lose precision in half types.
        device, model_dtype, dtype = self._execution_device, self.unet.dtype, torch.float32
        cond_images = self.images_to_tensor(images).to(device=device, dtype=self.vae.dtype)[None]
        num_condition = cond_images.shape[1]

        condition = encode_condition(self.vae, self.image_encoder, cond_images)
        gen_view_ids = torch.tensor([ids], device=device)
        latent_shape = (1, len(ids), self.unet.config.latent_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=dtype)
        cond_noise = randn_tensor((1, num_condition, *latent_shape[2:]), generator=generator, device=device, dtype=dtype)

        sampler.set_timesteps(int(num_inference_steps), device=device)
        self._num_timesteps = len(sampler.timesteps)
        latents = latents * sampler.init_noise_sigma
        guided = guidance_scale > 1.0
        # Which steps are guided, read once (reading each step's timestep in the loop would
        # wait for the GPU every step).
        train_timesteps = float(sampler.config.num_train_timesteps)
        guided_steps = [guided and low <= float(v) / train_timesteps <= high for v in sampler.timesteps.tolist()]
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(sampler.step).parameters else {}
        for i, t in enumerate(self.progress_bar(sampler.timesteps)):
            # Condition views are noised to the same timestep, exactly as in training.
            noisy_cond = sampler.add_noise(condition.latents.to(dtype).flatten(0, 1), cond_noise.flatten(0, 1), t.reshape(1))
            both = torch.cat([noisy_cond.unflatten(0, (1, num_condition)), latents], dim=1)
            both = sampler.scale_model_input(both.flatten(0, 1), t).unflatten(0, both.shape[:2])
            model_cond, model_gen = both[:, :num_condition].to(model_dtype), both[:, num_condition:].to(model_dtype)
            timesteps = t.reshape(1).to(device)
            cond_inputs = build_unet_inputs(self.unet.config, model_cond, model_gen, condition, gen_view_ids, timesteps)
            uncond_inputs = (build_unet_inputs(self.unet.config, model_cond, model_gen, condition, gen_view_ids, timesteps,
                                               drop_condition=True) if guided_steps[i] else None)
            try:
                pred, pred_uncond, batch_guidance = self._predict(cond_inputs, uncond_inputs, batch_guidance)
            except torch.OutOfMemoryError:
                raise MVDPPError(OUT_OF_MEMORY, "the GPU ran out of memory while sampling",
                                 "generate fewer views at once (view_ids), or use the CPU") from None
            pred = split_views(pred.to(dtype), 1, num_condition)[1]
            if pred_uncond is not None:
                pred_uncond = split_views(pred_uncond.to(dtype), 1, num_condition)[1]
                pred = rescale_guided_prediction(pred_uncond + guidance_scale * (pred - pred_uncond), pred, float(guidance_rescale))
            stepped = sampler.step(pred.flatten(0, 1), t, latents.flatten(0, 1), **step_kwargs, return_dict=False)[0]
            latents = stepped.unflatten(0, latents.shape[:2]).to(dtype)
            if callback_on_step_end is not None:
                local = {"latents": latents}
                result = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                if result and "latents" in result:
                    latents = result["latents"]

        cameras = [rig_cameras()[v] for v in ids]
        latents = latents[0]
        if output_type == "latent":
            images_out = latents
        else:
            array = decoded_to_uint8(decode_rgba(self.vae, latents, chunk_size=decode_chunk_size))
            images_out = array if output_type == "np" else self.numpy_to_pil(array)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images_out, cameras
        return MVDiffusionPPPipelineOutput(images=images_out, cameras=cameras)

    @staticmethod
    def numpy_to_pil(array: np.ndarray) -> list:
        from PIL import Image

        return [Image.fromarray(view) for view in array]
