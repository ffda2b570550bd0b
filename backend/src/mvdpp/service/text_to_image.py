"""Text to a condition image: any diffusers text-to-image pipeline makes one object on white.

The paper shows that images from a text-to-image model work as condition images. This module
loads such a pipeline (a local diffusers folder or a Hugging Face hub id) safely — safetensors
only, no remote code, model_index.json limited to diffusers/transformers classes — and prompts it
for a single centred object on a plain white background, which the usual input path (background
removal, framing) then turns into a condition view.

Imports torch and diffusers inside functions only.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import errors
from ..errors import JobCancelled, MVDPPError
from .safe_loading import check_pipeline_folder

T2I = "text_to_image"
#: What every prompt is extended with, so that the background removal finds one framed object.
PROMPT_SUFFIX = ", a single object, centered, full view, isolated on a plain white background, studio product photo"
NEGATIVE_PROMPT = "cluttered background, scenery, multiple objects, cropped, text, watermark, shadow"
#: Libraries a local text-to-image folder's model_index.json may name (never remote code).
T2I_ALLOWED_LIBRARIES = ("diffusers", "transformers")
#: "owner/name" as the hub spells repository ids.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Distilled few-step models (SD-Turbo, SDXL-Turbo, Lightning, LCM, FLUX schnell) want 1-4 steps
#: and no classifier-free guidance; they are recognised by name or scheduler.
FEW_STEP_NAMES = ("turbo", "lightning", "lcm", "schnell", "hyper")
FEW_STEP_SCHEDULERS = ("LCMScheduler", "TCDScheduler")
MAX_PROMPT_CHARS = 1000


def _bad(message: str, hint: str) -> MVDPPError:
    return MVDPPError(errors.BAD_REQUEST, message, hint)


@dataclass
class TextToImageSettings:
    prompt: str
    model: str
    steps: int | None = None  # None: the model's default (few-step models 1-4, others the pipeline's)
    guidance: float | None = None  # None: 0 for few-step models, the pipeline's default otherwise
    seed: int | None = None  # None: the job's seed

    def validate(self) -> "TextToImageSettings":
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise _bad("The prompt is empty.", "Describe one object, e.g. \"a red ceramic teapot\".")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise _bad(f"The prompt is {len(self.prompt)} characters long; at most {MAX_PROMPT_CHARS} are allowed.",
                       "Describe the object in a sentence or two.")
        if not isinstance(self.model, str) or not self.model.strip():
            raise _bad("A prompt needs a text-to-image model (t2i_model / --t2i).",
                       "Pass a diffusers text-to-image pipeline folder or a hub id such as stabilityai/sd-turbo.")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 200):
            raise _bad(f"Text-to-image steps must be an integer from 1 to 200, not {self.steps!r}.",
                       "Leave it out for the model's default (1-4 for Turbo models).")
        if self.guidance is not None and (isinstance(self.guidance, bool) or not isinstance(self.guidance, (int, float))
                                          or not 0 <= self.guidance <= 50):
            raise _bad(f"Text-to-image guidance must be a number from 0 to 50, not {self.guidance!r}.",
                       "Leave it out for the model's default (0 for Turbo models).")
        self.prompt = self.prompt.strip()
        self.model = self.model.strip()
        return self


# ---------------------------------------------------------------------------------- loading


def local_folder(model: str) -> Path | None:
    """The model as a local folder, or None when it is a hub id; a missing path is an error."""
    path = Path(model).expanduser()
    if path.exists():
        return path.absolute()
    if HUB_ID.match(model) and not model.startswith((".", "~")):
        return None
    raise MVDPPError(errors.CHECKPOINT, f"The text-to-image model {model} does not exist.",
                     "Pass a diffusers text-to-image pipeline folder (with model_index.json) or a hub id "
                     "such as stabilityai/sd-turbo.")


def check_local_folder(folder: Path) -> None:
    """Refuse anything but a diffusers folder of safetensors weights and diffusers/transformers classes."""
    check_pipeline_folder(folder, what="The text-to-image model", allowed_libraries=T2I_ALLOWED_LIBRARIES,
                          hint="Pass a diffusers text-to-image pipeline folder (made with save_pretrained).",
                          trusted_hint="Only text-to-image pipelines made of diffusers and transformers classes are loaded.",
                          refuse_any_pickle=False)


def load_text_to_image(model: str, device: str = "cpu", low_vram: bool = False):
    """Load a text-to-image pipeline from a local folder or a hub id (downloaded with diffusers'
    own progress bars, into the usual Hugging Face cache). Returns the pipeline."""
    import torch
    from diffusers import AutoPipelineForText2Image

    folder = local_folder(model)
    if folder is not None:
        check_local_folder(folder)
    source = str(folder) if folder is not None else model
    dtype = torch.float16 if device == "cuda" else torch.float32
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(source, use_safetensors=True, dtype=dtype,
                                                         local_files_only=folder is not None)
    except MVDPPError:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers/hub raise many types; all mean "cannot load this"
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if folder is None:
            raise MVDPPError(errors.CHECKPOINT, f"The text-to-image model {model} could not be downloaded (nor found in the local cache: {reason}).",
                             "Check the hub id and your internet connection (Blender: allow online access), "
                             "or download the model once and pass its local folder instead.") from exc
        raise MVDPPError(errors.CHECKPOINT, f"The text-to-image model {folder} cannot be loaded ({reason}).",
                         "Pass a complete diffusers text-to-image pipeline folder with safetensors weights.") from exc
    pipe.set_progress_bar_config(disable=True)  # the job reports progress itself
    if low_vram and device == "cuda":
        try:
            pipe.enable_model_cpu_offload(device=device)
        except (ImportError, AttributeError, ValueError, RuntimeError) as exc:
            print(f"mvdpp: CPU offload of the text-to-image model unavailable ({exc})", file=sys.stderr)
            pipe.to(device)
    else:
        pipe.to(device)
    pipe._mvdpp_model_name = model  # noqa: SLF001 - what default_steps_and_guidance looks at
    return pipe


def is_few_step_model(pipe, model: str) -> bool:
    scheduler = type(getattr(pipe, "scheduler", None)).__name__
    name = (model + " " + str(getattr(pipe.config, "_name_or_path", ""))).lower()
    return scheduler in FEW_STEP_SCHEDULERS or any(word in name for word in FEW_STEP_NAMES)


def call_defaults(pipe) -> tuple[int, float]:
    """The pipeline's own num_inference_steps and guidance_scale defaults (SD: 50 and 7.5, SDXL:
    50 and 5.0, FLUX.1-dev: 28 and 3.5, ...), read from its __call__ signature."""
    import inspect

    try:
        parameters = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        parameters = {}

    def default(name, fallback):
        value = parameters[name].default if name in parameters else inspect.Parameter.empty
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else fallback

    return int(default("num_inference_steps", 30)), float(default("guidance_scale", 7.5))


def default_steps_and_guidance(pipe, model: str) -> tuple[int, float]:
    """Few-step (distilled) models: 1 step (4 for LCM), no guidance; others: the pipeline's own defaults."""
    if is_few_step_model(pipe, model):
        steps = 4 if type(getattr(pipe, "scheduler", None)).__name__ in FEW_STEP_SCHEDULERS or "lcm" in model.lower() else 1
        return steps, 0.0
    return call_defaults(pipe)


# ---------------------------------------------------------------------------------- generating


def full_prompt(prompt: str) -> str:
    return prompt.rstrip(" .,;") + PROMPT_SUFFIX


def generate_condition_image(pipe, settings: TextToImageSettings, seed: int,
                             progress: Callable[[str, int, int], None] | None = None,
                             should_cancel: Callable[[], bool] | None = None):
    """One RGB PIL image of the prompted object on white. Returns (image, steps, guidance)."""
    import torch

    steps, guidance = default_steps_and_guidance(pipe, settings.model)
    steps = settings.steps if settings.steps is not None else steps
    guidance = float(settings.guidance) if settings.guidance is not None else guidance
    if progress is not None:
        progress(T2I, 0, steps)

    def on_step_end(pipeline, step, timestep, callback_kwargs):
        if progress is not None:
            progress(T2I, min(step + 1, steps), steps)
        if should_cancel is not None and should_cancel():
            raise JobCancelled()
        return callback_kwargs

    options = {}
    if guidance > 1.0:  # a negative prompt only matters with classifier-free guidance
        options["negative_prompt"] = NEGATIVE_PROMPT
    with torch.inference_mode():
        try:
            output = pipe(full_prompt(settings.prompt), num_inference_steps=steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(seed), callback_on_step_end=on_step_end,
                          output_type="pil", **options)
        except TypeError as exc:  # pipelines without negative prompts or step callbacks
            if "unexpected keyword" not in str(exc):
                raise
            output = pipe(full_prompt(settings.prompt), num_inference_steps=steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(seed), output_type="pil")
    return output.images[0].convert("RGB"), steps, guidance
