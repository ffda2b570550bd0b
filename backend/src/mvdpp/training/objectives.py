"""The training losses: one class per kind of stage, each naming the modules it trains.

UNet stages build the UNet inputs with ``mvdpp.pipelines``' shared functions
(``encode_condition``, ``build_unet_inputs``, ``split_views``), the very code the sampler runs,
so training and sampling cannot drift apart. The VAE is frozen there; latents are computed on
the fly from the rendered views.

All randomness of a step (noise, timesteps, condition dropout) comes from the ``generator``
the trainer derives from (seed, process, step), so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .stages import Stage

#: The decoded alpha channel is read as a mask logit scaled by this factor for the BCE: alpha
#: +-1 (what the pipeline's clamp keeps) then means a 98% sure mask, and alpha 0 is coverage
#: 0.5, the same threshold the pipeline's (alpha + 1) / 2 uses.
MASK_LOGIT_SCALE = 4.0
KL_WEIGHT = 1e-6
MASK_BCE_WEIGHT = 0.1
#: Both VAE stages add the L1 averaged over the object's pixels only: objects cover a small part
#: of a view, so in the plain mean a wrong hue on the object (the first embedded VAE turned
#: yellow into brown) costs little next to the white background it already gets right. The
#: first `vae` run (1,001 steps) had no such term, and its encoder keeps little of the green
#: (docs/training.md): the term was in `vae-decoder` only until session 13.
OBJECT_L1_WEIGHT = 1.0


class VAERoundTrip(nn.Module):
    """encode -> sample -> decode as one ``forward``, so DDP (which only wraps ``forward``)
    sees the whole VAE step and synchronises its gradients."""

    def __init__(self, vae: nn.Module, decoder_only: bool = False):
        super().__init__()
        self.vae = vae
        self.decoder_only = decoder_only

    def forward(self, images: torch.Tensor, generator: torch.Generator):
        # decoder_only: no gradient reaches the encoder, so its weights (and the latents the UNet
        # learned) stay bit-identical; AdamW skips parameters without a gradient.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.decoder_only):
            posterior = self.vae.encode(images).latent_dist
            # Sampled, not the mean: the decoder also sees latents a little off the encoder's,
            # as a UNet's generated latents are.
            latents = posterior.sample(generator)
        decoded = self.vae.decode(latents).sample
        kl = posterior.kl().mean() / latents[0].numel()
        return decoded, kl


class VAEObjective:
    """Mask-aware VAE: L1 on RGBA (clamped as the pipeline decodes) plus the L1 over the object's
    pixels (``OBJECT_L1_WEIGHT``), BCE on the mask, small KL.

    ``decoder_only`` (stage vae-decoder): the encoder is frozen and the KL term (an encoder
    loss) is dropped."""

    def __init__(self, pipe, stage: Stage, decoder_only: bool = False):
        self.pipe = pipe
        self.stage = stage
        self.decoder_only = decoder_only
        self.round_trip = VAERoundTrip(pipe.vae, decoder_only=decoder_only)

    def trained_modules(self) -> dict[str, nn.Module]:
        """The pipeline components whose weights train (EMA, export)."""
        return {"vae": self.pipe.vae}

    def training_modules(self) -> dict[str, nn.Module]:
        """What the trainer wraps (accelerate.prepare) and calls: the same parameters."""
        return {"vae": self.round_trip}

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters of the trained modules that stay fixed (the encoder, for vae-decoder)."""
        if not self.decoder_only:
            return []
        vae = self.pipe.vae
        return [*vae.encoder.parameters(), *(vae.quant_conv.parameters() if vae.quant_conv is not None else [])]

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {"unet": self.pipe.unet, "image_encoder": self.pipe.image_encoder}

    def images_of(self, batch: dict) -> torch.Tensor:
        # Both the condition views (off-rig cameras) and the generation views are real renders.
        return torch.cat([batch["cond"].flatten(0, 1), batch["gen"].flatten(0, 1)])

    def loss(self, batch: dict, generator: torch.Generator, vae: nn.Module | None = None) -> tuple[torch.Tensor, dict]:
        """``vae``: the (possibly wrapped) ``VAERoundTrip`` from ``training_modules``."""
        round_trip = self.round_trip if vae is None else vae
        images = self.images_of(batch)
        decoded, kl = round_trip(images, generator)
        decoded, kl = decoded.float(), kl.float()
        target = images.float()
        error = (decoded.clamp(-1, 1) - target).abs()
        l1 = error.mean()
        mask_target = (target[:, 3] + 1.0) / 2.0
        bce = F.binary_cross_entropy_with_logits(decoded[:, 3] * MASK_LOGIT_SCALE, mask_target)
        weight = mask_target[:, None]
        object_l1 = (error * weight).sum() / (weight.sum() * error.shape[1]).clamp(min=1.0)
        metrics = {"l1": l1.detach(), "object_l1": object_l1.detach(), "mask_bce": bce.detach(), "kl": kl.detach()}
        loss = l1 + OBJECT_L1_WEIGHT * object_l1 + MASK_BCE_WEIGHT * bce
        # KL is an encoder loss: without an encoder gradient (vae-decoder) it only adds noise
        return (loss if self.decoder_only else loss + KL_WEIGHT * kl), metrics


class UNetObjective:
    """Denoising loss over all views of each object (condition views are denoised too, PAPER.md)."""

    def __init__(self, pipe, stage: Stage, condition_dropout: float):
        from ..pipelines import make_scheduler

        self.pipe = pipe
        self.stage = stage
        self.condition_dropout = float(condition_dropout)
        # Training noises with the pipeline's own schedule; the sampler kind does not matter here.
        self.noise_scheduler = make_scheduler("ddpm", like=pipe.scheduler, prediction_type=stage.prediction_type)
        self._alphas = None
        self._null = None

    def trained_modules(self) -> dict[str, nn.Module]:
        modules = {"unet": self.pipe.unet}
        if _is_trainable_encoder(self.pipe.image_encoder):
            modules["image_encoder"] = self.pipe.image_encoder
        return modules

    def training_modules(self) -> dict[str, nn.Module]:
        return self.trained_modules()

    def frozen_parameters(self) -> list[nn.Parameter]:
        return []

    def frozen_modules(self) -> dict[str, nn.Module]:
        frozen = {"vae": self.pipe.vae}
        if not _is_trainable_encoder(self.pipe.image_encoder):
            frozen["image_encoder"] = self.pipe.image_encoder
        return frozen

    def _null_latent(self, vae, cond: torch.Tensor) -> torch.Tensor:
        if self._null is None:
            from ..pipelines import null_condition_latent

            with torch.no_grad():
                self._null = null_condition_latent(vae, cond.shape[-1])
        return self._null

    def _schedule(self, device):
        if self._alphas is None or self._alphas.device != device:
            self._alphas = self.noise_scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        return self._alphas

    def loss(self, batch: dict, generator: torch.Generator, unet: nn.Module | None = None,
             image_encoder: nn.Module | None = None) -> tuple[torch.Tensor, dict]:
        from ..models import encode_rgba
        from ..pipelines import build_unet_inputs, encode_condition, split_views

        unet = self.pipe.unet if unet is None else unet
        image_encoder = self.pipe.image_encoder if image_encoder is None else image_encoder
        vae = self.pipe.vae
        cond = batch["cond"]
        # Rig indices stay on the host: the shared input code checks their range, which on a
        # device tensor would cost a host synchronisation every step.
        gen_view_ids = batch["gen_view_ids"].cpu()
        batch_size, num_cond = cond.shape[0], cond.shape[1]
        device = cond.device

        if "gen_latents" in batch:  # the device latent cache already ran the frozen VAE
            gen_latents = batch["gen_latents"].float()
            with record_function("image_encoder"):
                condition = condition_from_latents(vae, image_encoder, cond, batch["cond_latents"], self._null_latent(vae, cond))
        else:
            with record_function("vae"), torch.no_grad():
                gen_latents = encode_rgba(vae, batch["gen"]).float()
            with record_function("image_encoder"):
                condition = encode_condition(vae, image_encoder, cond)
        num_gen = gen_latents.shape[1]
        cond_latents = condition.latents.float()

        alphas = self._schedule(device)
        num_train = alphas.shape[0]
        t = torch.randint(0, num_train, (batch_size,), device=device, generator=generator)
        noise_cond = torch.randn(cond_latents.shape, device=device, generator=generator)
        noise_gen = torch.randn(gen_latents.shape, device=device, generator=generator)
        drop = torch.rand(batch_size, device=device, generator=generator) < self.condition_dropout

        sched = self.noise_scheduler
        t_cond, t_gen = t.repeat_interleave(num_cond), t.repeat_interleave(num_gen)
        noisy_cond = sched.add_noise(cond_latents.flatten(0, 1), noise_cond.flatten(0, 1), t_cond).unflatten(0, (batch_size, num_cond))
        noisy_gen = sched.add_noise(gen_latents.flatten(0, 1), noise_gen.flatten(0, 1), t_gen).unflatten(0, (batch_size, num_gen))
        inputs = build_unet_inputs(unet_config(unet), noisy_cond, noisy_gen, condition, gen_view_ids, t, drop_condition=drop)
        pred = unet(**inputs.as_kwargs()).sample.float()
        pred_cond, pred_gen = split_views(pred, batch_size, num_cond)

        if self.stage.prediction_type == "v_prediction":
            target_cond = sched.get_velocity(cond_latents.flatten(0, 1), noise_cond.flatten(0, 1), t_cond).unflatten(0, (batch_size, num_cond))
            target_gen = sched.get_velocity(gen_latents.flatten(0, 1), noise_gen.flatten(0, 1), t_gen).unflatten(0, (batch_size, num_gen))
        else:
            target_cond, target_gen = noise_cond, noise_gen
        loss_gen = F.mse_loss(pred_gen, target_gen)
        # A dropped object's condition views carry no information about their own latents
        # (build_unet_inputs zeroes them), so they are not asked to denoise anything.
        keep = (~drop).float().view(batch_size, 1, 1, 1, 1)
        per_cond = ((pred_cond - target_cond) ** 2 * keep).sum() / (keep.sum() * pred_cond[0].numel()).clamp_min(1.0)
        loss = (num_gen * loss_gen + num_cond * per_cond) / (num_gen + num_cond)
        return loss, {"loss_gen": loss_gen.detach(), "loss_cond": per_cond.detach()}


def condition_from_latents(vae, image_encoder, cond_images: torch.Tensor, cond_latents: torch.Tensor,
                           null_latent: torch.Tensor):
    """``mvdpp.pipelines.encode_condition`` for condition views whose VAE latents are already
    known (the latent cache encoded them with the same ``encode_rgba``): only the trainable image
    encoder runs. tests/backend/test_training.py checks it equals ``encode_condition``."""
    from ..models import encode_condition_images
    from ..pipelines import ConditionEncoding

    batch, num_condition = cond_images.shape[:2]
    flat = cond_images.reshape(batch * num_condition, *cond_images.shape[2:])
    tokens = encode_condition_images(image_encoder, flat)
    tokens = tokens.reshape(batch, num_condition * tokens.shape[1], tokens.shape[2])
    return ConditionEncoding(latents=cond_latents, tokens=tokens, null_latent=null_latent)


def unet_config(unet: nn.Module):
    """The config of a UNet that may be wrapped (DDP, torch.compile)."""
    while not hasattr(unet, "config"):
        unet = getattr(unet, "module", None) or getattr(unet, "_orig_mod")
    return unet.config


def _is_trainable_encoder(encoder: nn.Module) -> bool:
    # CLIP (the paper preset) stays frozen as in the paper; the small CNN encoder of the small
    # presets has no pretrained weights and must learn with the UNet.
    return type(encoder).__name__ == "SmallImageEncoder"


def make_objective(pipe, stage: Stage, condition_dropout: float):
    if stage.trains == "vae":
        return VAEObjective(pipe, stage, decoder_only=stage.decoder_only)
    return UNetObjective(pipe, stage, condition_dropout)
