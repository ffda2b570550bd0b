"""Noise schedulers by name: "ddpm" (the paper's sampler), "ddim", "dpm++", "euler".

All share one noise schedule: Stable Diffusion's (1000 steps, betas 0.00085-0.012 on the
square-root scale, which the LDM code calls "linear" and diffusers "scaled_linear"), so a model
trained with one sampler samples with any of them. The prediction type (epsilon or v) is part of
the scheduler config and travels with the checkpoint.
"""

from __future__ import annotations

from ..errors import BAD_INPUT, MVDPPError

#: Settings every sampler shares; switching samplers keeps these from the current scheduler.
SHARED_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
               "rescale_betas_zero_snr")

DEFAULT_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}

#: name -> (diffusers class name, its sampler-specific settings). "trailing" spacing starts the
#: sampling at the last training timestep, which matters for few-step sampling.
SCHEDULERS = {
    "ddpm": ("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_small", "timestep_spacing": "trailing"}),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True, "timestep_spacing": "trailing"}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "timestep_spacing": "trailing"}),
    "euler": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}


def make_scheduler(name: str, like=None, prediction_type: str | None = None, zero_terminal_snr: bool | None = None):
    """A scheduler called ``name`` with the schedule of scheduler ``like`` (or the default one);
    ``zero_terminal_snr`` True rescales the betas so the last timestep is pure noise."""
    import diffusers

    if name not in SCHEDULERS:
        raise MVDPPError(BAD_INPUT, f"unknown scheduler {name!r}", f"use one of: {', '.join(SCHEDULERS)}")
    class_name, settings = SCHEDULERS[name]
    config = dict(DEFAULT_SCHEDULE)
    if like is not None:
        config.update({k: like.config[k] for k in SHARED_KEYS if k in like.config})
    if prediction_type is not None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise MVDPPError(BAD_INPUT, f"unknown prediction type {prediction_type!r}", "use 'epsilon' or 'v_prediction'")
        config["prediction_type"] = prediction_type
    if zero_terminal_snr is not None:
        config["rescale_betas_zero_snr"] = bool(zero_terminal_snr)
    config.update(settings)
    return getattr(diffusers, class_name).from_config(config)


def scheduler_name(scheduler) -> str | None:
    """The name ``make_scheduler`` knows ``scheduler`` by, or None for another kind."""
    for name, (class_name, _) in SCHEDULERS.items():
        if type(scheduler).__name__ == class_name:
            return name
    return None
