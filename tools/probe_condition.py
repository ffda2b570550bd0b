"""Does a checkpoint use its condition image and its view ids?

Scores the UNet's prediction error (its own objective: epsilon or v MSE) on freshly rendered
objects at a few timesteps, four ways: with the true condition, with no condition (the
classifier-free-guidance input), with another object's condition, and with the rig view ids
shuffled among each object's views. A model that uses the condition and the poses scores
clearly worse in the last three; equal figures mean it ignores them (BENCHMARKS.md, "Embedded
default model"). ``--guidance G ...`` adds the error of the guided prediction the sampler
follows, uncond + G (cond - uncond), which a lower conditional error alone does not bound.

    PYTHONPATH=backend/src python tools/probe_condition.py backend/src/mvdpp/weights/default
"""

from __future__ import annotations

import argparse

import torch

from mvdpp.data.stream import MultiViewStream
from mvdpp.models import encode_rgba
from mvdpp.pipelines import MVDiffusionPPPipeline, build_unet_inputs, encode_condition, make_scheduler, split_views

TIMESTEPS = (100, 300, 500, 700, 900)


@torch.no_grad()
def probe(checkpoint: str, objects: int, device: str, guidance=()) -> None:
    pipe = MVDiffusionPPPipeline.from_pretrained(checkpoint).to(device)
    pipe.set_progress_bar_config(disable=True)
    unet = pipe.unet.float()
    pipe.vae.float()
    pipe.image_encoder.float()
    print(f"view-embedding scale {unet.view_embedding_scale.item():.3f}, table std {unet.view_embedding.weight.std().item():.3f}, "
          f"VAE scaling factor {pipe.vae.config.scaling_factor}")
    batch = MultiViewStream(batch_size=objects, size=pipe.resolution, condition_views="single", seed=777).make_batch(0)
    batch = {k: v.to(device) for k, v in batch.items()}
    scheduler = make_scheduler("ddpm", like=pipe.scheduler)
    prediction = scheduler.config.prediction_type
    condition = encode_condition(pipe.vae, pipe.image_encoder, batch["cond"])
    gen = encode_rgba(pipe.vae, batch["gen"])
    num_gen = gen.shape[1]
    ids = batch["gen_view_ids"].cpu()
    print(f"latent std {gen.std().item():.3f}; {prediction} MSE of the generation views:")
    for t in TIMESTEPS:
        per_object = torch.full((objects,), t, device=device)
        per_view = per_object.repeat_interleave(num_gen)
        g = torch.Generator(device).manual_seed(t)
        noise = torch.randn(gen.shape, device=device, generator=g)
        cond_noise = torch.randn(condition.latents.shape, device=device, generator=g)
        noisy_gen = scheduler.add_noise(gen.flatten(0, 1), noise.flatten(0, 1), per_view).unflatten(0, gen.shape[:2])
        noisy_cond = scheduler.add_noise(condition.latents.flatten(0, 1), cond_noise.flatten(0, 1), per_object).unflatten(0, condition.latents.shape[:2])
        if prediction == "epsilon":
            target = noise
        else:
            target = scheduler.get_velocity(gen.flatten(0, 1), noise.flatten(0, 1), per_view).unflatten(0, gen.shape[:2])

        def predict(cond_latents, cond, view_ids, **kw) -> torch.Tensor:
            inputs = build_unet_inputs(unet.config, cond_latents, noisy_gen, cond, view_ids, per_object, **kw)
            return split_views(unet(**inputs.as_kwargs()).sample, objects, 1)[1]

        def error(predicted) -> float:
            return ((predicted - target) ** 2).mean().item()

        conditional = predict(noisy_cond, condition, ids)
        unconditional = predict(noisy_cond, condition, ids, drop_condition=True)
        other = type(condition)(latents=condition.latents.roll(1, 0), tokens=condition.tokens.roll(1, 0),
                                null_latent=condition.null_latent)
        # what the sampler follows: the prediction extrapolated away from the unconditional one
        guided = "".join(f"  guided {g:g} {error(unconditional + g * (conditional - unconditional)):.5f}" for g in guidance)
        print(f"t={t:>3}  true condition {error(conditional):.5f}  "
              f"none {error(unconditional):.5f}  "
              f"another object's {error(predict(noisy_cond.roll(1, 0), other, ids)):.5f}  "
              f"view ids shuffled {error(predict(noisy_cond, condition, ids.roll(1, 1))):.5f}{guided}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a pipeline folder (an export, or backend/src/mvdpp/weights/default)")
    parser.add_argument("--objects", type=int, default=8, help="objects rendered for the probe (8 views each)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--guidance", type=float, nargs="*", default=[], metavar="G",
                        help="also score the guided prediction uncond + G (cond - uncond) at these scales")
    args = parser.parse_args()
    probe(args.checkpoint, args.objects, args.device, args.guidance)


if __name__ == "__main__":
    main()
