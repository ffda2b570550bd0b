"""The generate job shared by ``mvdpp generate`` and ``mvdpp serve``.

reference images -> normalised inputs -> 32 views (the pipeline) -> mesh (the reconstruction)
-> a result folder written through ``mvdpp.result.ResultWriter`` (complete or not at all).

Loading is safe by construction: safetensors weights only, local files only, and the
checkpoint's model_index.json may name only classes from diffusers, transformers or mvdpp (it is
never allowed to pull in other code).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from .. import __version__, errors, result
from ..errors import JobCancelled, MVDPPError
from ..paths import default_checkpoint
from ..protocol import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_RESCALE
from . import images as image_inputs
from .safe_loading import check_pipeline_folder

Progress = Callable[[str, int, int], None]
ShouldCancel = Callable[[], bool]

#: Sampler names of mvdpp.pipelines.make_scheduler (kept here so that `mvdpp --help` needs no torch;
#: a test checks that the two agree). Every sampler keeps the checkpoint's noise schedule.
SCHEDULERS = ("dpm++", "ddim", "ddpm", "euler")
DEVICES = ("auto", "cuda", "cpu")
MESH_QUALITIES = ("auto", "draft", "standard", "high")
#: libraries a checkpoint's model_index.json may take its component classes from
ALLOWED_LIBRARIES = ("diffusers", "transformers", "mvdpp")


def _no_op_progress(stage: str, step: int, total: int) -> None:
    pass


def _never() -> bool:
    return False


# ---------------------------------------------------------------------------------- settings


@dataclass
class GenerateSettings:
    steps: int = 30
    guidance: float = DEFAULT_GUIDANCE
    guidance_rescale: float = DEFAULT_GUIDANCE_RESCALE
    seed: int | None = None  # None: a random seed, recorded in meta.json
    scheduler: str | None = None  # None: the checkpoint's own sampler
    mesh: bool = True
    mesh_quality: str = "auto"  # "draft" | "standard" | "high" | "auto" (by device)
    overwrite: bool = False

    def validate(self) -> "GenerateSettings":
        def bad(message: str, hint: str) -> MVDPPError:
            return MVDPPError(errors.BAD_REQUEST, message, hint)

        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise bad(f"steps must be an integer from 1 to 1000, not {self.steps!r}.", "30 is a good default.")
        if isinstance(self.guidance, bool) or not isinstance(self.guidance, (int, float)) or not 0 <= self.guidance <= 50:
            raise bad(f"guidance must be a number from 0 to 50, not {self.guidance!r}.", f"{DEFAULT_GUIDANCE} is a good default.")
        rescale = self.guidance_rescale
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not 0 <= rescale <= 1:
            raise bad(f"guidance_rescale must be a number from 0 to 1, not {rescale!r}.",
                      f"0 turns it off; {DEFAULT_GUIDANCE_RESCALE} is the default.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63):
            raise bad(f"seed must be a non-negative integer or null, not {self.seed!r}.", "Leave it out for a random seed.")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise bad(f"Unknown scheduler {self.scheduler!r}.", f"Choose one of {', '.join(SCHEDULERS)}.")
        if self.mesh_quality not in MESH_QUALITIES:
            raise bad(f"Unknown mesh quality {self.mesh_quality!r}.", f"Choose one of {', '.join(MESH_QUALITIES)}.")
        for name in ("mesh", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise bad(f"{name} must be true or false.", "")
        self.guidance, self.guidance_rescale = float(self.guidance), float(self.guidance_rescale)
        return self


@dataclass
class GenerateRequest:
    images: list[Path]
    out: Path
    settings: GenerateSettings
    text_to_image: "TextToImageSettings | None" = None  # set: the condition image comes from a prompt


@dataclass
class PromptSource:
    """A condition image made from a prompt: kept in the result folder, described in meta.json."""

    image_path: Path  # the generated image as the text-to-image model made it (before masking/framing)
    meta: dict  # prompt, model, steps, guidance, seed
    seconds: float  # how long the text-to-image model took


#: Request keys of a generate-from-prompt request -> TextToImageSettings fields
PROMPT_KEYS = {"prompt": "prompt", "t2i_model": "model", "t2i_steps": "steps", "t2i_guidance": "guidance"}


def _bad_request(message: str, hint: str = "") -> MVDPPError:
    return MVDPPError(errors.BAD_REQUEST, message, hint)


def parse_generate_request(request: dict) -> GenerateRequest:
    """A protocol ``generate`` request -> validated paths and settings (MVDPPError otherwise)."""
    setting_names = {f.name for f in fields(GenerateSettings)}
    unknown = set(request) - {"type", "id", "images", "out"} - setting_names - set(PROMPT_KEYS)
    if unknown:
        raise _bad_request(f"Unknown generate setting(s): {', '.join(sorted(unknown))}.",
                           f"Known settings: images, out, {', '.join(sorted(setting_names | set(PROMPT_KEYS)))}.")
    text_to_image = None
    if "prompt" in request or "t2i_model" in request:
        from .text_to_image import TextToImageSettings

        if request.get("images"):
            raise _bad_request("A generate request takes either 'images' or a 'prompt', not both.",
                               "Leave out 'images' to generate the condition image from the prompt.")
        text_to_image = TextToImageSettings(**{field: request.get(key) for key, field in PROMPT_KEYS.items()}).validate()
        images = []
    else:
        for key in ("t2i_steps", "t2i_guidance"):
            if key in request:
                raise _bad_request(f"'{key}' needs a 'prompt' and a 't2i_model'.", "")
        images = request.get("images")
        if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
            raise _bad_request("'images' must be a list of image paths (or give a 'prompt').", "")
        image_inputs.check_input_count(images)
    out = request.get("out")
    if not isinstance(out, str) or not out:
        raise _bad_request("'out' must be the path of the result folder to create.", "")
    settings = GenerateSettings(**{k: request[k] for k in setting_names if k in request}).validate()
    return GenerateRequest([Path(p) for p in images], Path(out), settings, text_to_image)


# ---------------------------------------------------------------------------------- loading


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    if checkpoint is None:
        folder = default_checkpoint()
        if folder is None:
            raise MVDPPError(errors.CHECKPOINT, "No embedded model is in this build of MVD++.",
                             "Pass --checkpoint FOLDER with a trained pipeline folder (made by `mvdpp train`).")
        return folder
    return Path(checkpoint).expanduser().absolute()


def check_checkpoint(folder: Path) -> None:
    """Refuse anything but a local diffusers folder of safetensors weights and known classes."""
    check_pipeline_folder(folder, what="The checkpoint", allowed_libraries=ALLOWED_LIBRARIES,
                          hint="Pass the folder `mvdpp train` wrote (it holds model_index.json).",
                          trusted_hint="Only checkpoints made of diffusers, transformers and mvdpp classes are loaded.",
                          refuse_any_pickle=True)


def resolve_device(requested: str) -> str:
    import torch

    if requested not in DEVICES:
        raise MVDPPError(errors.DEVICE, f"Unknown device {requested!r}.", f"Use one of {', '.join(DEVICES)}.")
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise MVDPPError(errors.DEVICE, "CUDA was requested but PyTorch sees no CUDA GPU.",
                         "Install a CUDA build of PyTorch and a current NVIDIA driver, or use --device cpu (much slower).")
    print("mvdpp: warning: no CUDA GPU found; running on the CPU, which is much slower", file=sys.stderr)
    return "cpu"


def load_pipeline(checkpoint: str | os.PathLike | None, device: str = "auto", low_vram: bool = False):
    """Load the pipeline safely onto a device. Returns (pipeline, checkpoint folder, device)."""
    folder = resolve_checkpoint(checkpoint)
    check_checkpoint(folder)
    device = resolve_device(device)
    from diffusers.utils import logging as diffusers_logging

    from ..pipelines import MVDiffusionPPPipeline

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" bars: noise in the log
    try:
        pipe = MVDiffusionPPPipeline.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                     dtype=model_dtype(device))
    except MVDPPError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise MVDPPError(errors.CHECKPOINT, f"The checkpoint {folder} cannot be loaded ({type(exc).__name__}: {exc})".strip(),
                         "Check that it is a complete pipeline folder from `mvdpp train` of this MVD++ version.") from exc
    pipe.set_progress_bar_config(disable=True)  # the job reports progress itself
    keep_vae_in_float32(pipe)
    with translate_out_of_memory("loading the model", low_vram):
        if low_vram and device == "cuda":
            apply_low_vram(pipe, device)
        else:
            pipe.to(device)
    return pipe, folder, device


def model_dtype(device: str):
    """Weights in bf16 on GPUs that have it (half the memory and several times the speed of fp32;
    the sampler itself stays in fp32), else fp16 on CUDA, fp32 on the CPU."""
    import torch

    if device != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def keep_vae_in_float32(pipe) -> None:
    """fp16 overflows in Stable-Diffusion-style VAE decoders (NaN images); bf16 does not."""
    import torch

    if pipe.vae.dtype == torch.float16:
        pipe.vae.to(torch.float32)


#: Pipeline call options in low-VRAM mode: conditional and unconditional passes one after the
#: other instead of as one batch, and the VAE decoding one view at a time.
LOW_VRAM_CALL_OPTIONS = {"batch_guidance": False, "decode_chunk_size": 1}


def apply_low_vram(pipe, device: str) -> None:
    """Keep each model on the GPU only while it runs (the call options above do the rest)."""
    try:
        pipe.enable_model_cpu_offload(device=device)
        print("mvdpp: low-VRAM mode: CPU offload, sequential guidance, chunked VAE", file=sys.stderr)
    except (ImportError, AttributeError, ValueError, RuntimeError) as exc:
        print(f"mvdpp: CPU offload unavailable ({exc}); low-VRAM mode uses sequential guidance and a chunked VAE only",
              file=sys.stderr)
        pipe.to(device)


OUT_OF_MEMORY_HINT = ("Enable low-VRAM mode (--low-vram, or the add-on's Low VRAM option), close other programs "
                      "using the GPU, or use fewer input images.")
OUT_OF_MEMORY_HINT_LOW_VRAM = ("Low-VRAM mode is already on: close other programs using the GPU, use fewer input images, "
                               "a lower mesh quality, or the CPU (--device cpu, much slower).")


@contextlib.contextmanager
def translate_out_of_memory(what: str, low_vram: bool = False, hint: str | None = None):
    """Turn running out of GPU (or host) memory into a clear MVDPPError with advice: ``hint``,
    or by default the generate job's (low-VRAM mode, fewer inputs)."""
    host_hint = hint or "Close other programs, or use fewer input images."
    hint = hint or (OUT_OF_MEMORY_HINT_LOW_VRAM if low_vram else OUT_OF_MEMORY_HINT)
    try:
        yield
    except MVDPPError as exc:
        if exc.code != errors.OUT_OF_MEMORY:
            raise
        _free_gpu_memory()
        raise MVDPPError(errors.OUT_OF_MEMORY, f"The GPU ran out of memory while {what}.", hint) from exc
    except MemoryError as exc:
        gc.collect()
        raise MVDPPError(errors.OUT_OF_MEMORY, f"The computer ran out of memory while {what}.", host_hint) from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        _free_gpu_memory()
        raise MVDPPError(errors.OUT_OF_MEMORY, f"The GPU ran out of memory while {what}.", hint) from exc


def _free_gpu_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort after a failure
        pass


@contextlib.contextmanager
def cancellation_points(pipe, should_cancel: ShouldCancel):
    """Check for cancellation before every block of every model, not just between steps.

    A denoising step of the paper-size model takes about a second or two; checking inside
    it keeps cancel well under 2 s.
    """
    import torch

    def check(module, args):
        if should_cancel():
            raise JobCancelled()

    handles = []
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for module in component.modules():
                if module is not component and len(list(module.children())) > 0:
                    handles.append(module.register_forward_pre_hook(check))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------- the job


class StageTimer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds.setdefault(stage, round(time.perf_counter() - started, 3))


def check_output_folder(out: Path, overwrite: bool) -> Path:
    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        raise MVDPPError(errors.OUTPUT_EXISTS, f"The output folder {out} already exists.",
                         "Choose another folder, or allow overwriting (--overwrite).")
    if out.exists() and not out.is_dir():
        raise MVDPPError(errors.OUTPUT_EXISTS, f"{out} exists and is not a folder.", "Choose another output folder.")
    return out


def versions() -> dict:
    found = {"mvdpp": __version__, "python": platform.python_version()}
    for module_name in ("torch", "diffusers", "transformers", "numpy", "PIL", "trimesh"):
        module = sys.modules.get(module_name)
        if module is not None:
            found["pillow" if module_name == "PIL" else module_name] = getattr(module, "__version__", "unknown")
    return found


def run_generate(
    pipe,
    image_paths,
    out,
    settings: GenerateSettings,
    device: str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    progress: Progress = _no_op_progress,
    should_cancel: ShouldCancel = _never,
    low_vram: bool = False,
    prompt_source: PromptSource | None = None,
) -> Path:
    """Run one generate job with a loaded pipeline; returns the result folder.

    With ``prompt_source`` the single input image was made from a prompt (run_text_to_3d): the
    generated image is kept as inputs/prompt_image.png and the prompt goes into meta.json.
    """
    import numpy as np
    import torch

    def check_cancel() -> None:
        if should_cancel():
            raise JobCancelled()

    settings.validate()
    out = check_output_folder(out, settings.overwrite)
    timer = StageTimer()
    if prompt_source is not None:
        timer.seconds[TEXT_TO_IMAGE_STAGE] = round(prompt_source.seconds, 3)
    started = datetime.datetime.now(datetime.timezone.utc)

    with timer("load_inputs"):
        inputs = image_inputs.load_inputs(image_paths, pipe.resolution, progress)
    check_cancel()

    seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    scheduler = settings.scheduler or pipe.scheduler_name
    denoise_started = time.perf_counter()
    last_step_at = [denoise_started]

    def on_step_end(pipeline, step, timestep, callback_kwargs):
        last_step_at[0] = time.perf_counter()
        total = getattr(pipeline, "num_timesteps", None) or settings.steps
        progress("denoise", step + 1, total)
        check_cancel()
        return callback_kwargs

    with cancellation_points(pipe, should_cancel), translate_out_of_memory("generating the views", low_vram), torch.inference_mode():
        output = pipe(
            [item.image for item in inputs],
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            guidance_rescale=settings.guidance_rescale,
            generator=torch.Generator().manual_seed(seed),  # CPU noise: a seed means the same noise on any device
            callback_on_step_end=on_step_end,
            output_type="pil",
            scheduler=scheduler,
            **(LOW_VRAM_CALL_OPTIONS if low_vram else {}),
        )
    finished = time.perf_counter()
    timer.seconds["denoise"] = round(last_step_at[0] - denoise_started, 3)
    timer.seconds["decode"] = round(finished - last_step_at[0], 3)  # the pipeline decodes after the last step
    progress("decode", 1, 1)
    check_cancel()
    views, cameras = list(output.images), list(output.cameras)

    mesh = None
    mesh_skipped = None  # why there is no mesh although one was asked for (the views are still worth keeping)
    if settings.mesh:
        from ..recon import reconstruct

        check_views_show_an_object(views)
        mesh_timings: dict = {}
        with timer("mesh"), translate_out_of_memory("reconstructing the mesh", low_vram):
            try:
                mesh = reconstruct(
                    [np.asarray(view.convert("RGBA")) for view in views], cameras, quality=settings.mesh_quality,
                    device=device, progress=lambda stage, step, total: progress(f"mesh:{stage}", step, total),
                    should_cancel=should_cancel, timings=mesh_timings, view_source="generated",
                )
            except MVDPPError as exc:
                if exc.code != errors.INCONSISTENT_VIEWS:
                    raise
                mesh_skipped = {"code": exc.code, "message": exc.message, "hint": exc.hint}
        for stage, seconds in mesh_timings.items():
            timer.seconds[f"mesh:{stage.removesuffix('_s')}"] = round(float(seconds), 3)
        check_cancel()

    write_started = time.perf_counter()
    with timer("write"):
        try:
            writer = result.ResultWriter(out, overwrite=settings.overwrite)
        except FileExistsError as exc:
            raise MVDPPError(errors.OUTPUT_EXISTS, f"The output folder {out} already exists.",
                             "Choose another folder, or allow overwriting (--overwrite).") from exc
        try:
            with writer:
                total = len(views) + len(inputs) + 2
                for number, (view, camera) in enumerate(zip(views, cameras), start=1):
                    view.convert("RGBA").save(writer.path(result.view_filename(camera.index)))
                    progress("write", number, total)
                    check_cancel()
                for index, item in enumerate(inputs):
                    item.image.save(writer.path(result.input_filename(index)))
                if prompt_source is not None:
                    shutil.copyfile(prompt_source.image_path, writer.path(PROMPT_IMAGE_FILE))
                writer.write_json(result.CAMERAS_FILE, result.cameras_document(cameras, views[0].size))
                if mesh is not None:
                    from ..recon.export import save_mesh

                    save_mesh(mesh, writer.path(result.MESH_FILE))
                progress("write", total - 1, total)
                timer.seconds["write"] = round(time.perf_counter() - write_started, 3)  # meta.json itself excluded
                meta = {
                    "format": result.META_FORMAT,
                    "version": result.FORMAT_VERSION,
                    "created": started.isoformat(timespec="seconds"),
                    "settings": {**asdict(settings), "seed": seed, "scheduler": scheduler, "device": device, "low_vram": low_vram},
                    "seed": seed,
                    "checkpoint": str(checkpoint) if checkpoint is not None else None,
                    "inputs": [
                        {"source": str(out / PROMPT_IMAGE_FILE) if prompt_source is not None else str(item.source.absolute()),
                         "file": result.input_filename(index), "mask": item.mask_method}
                        for index, item in enumerate(inputs)
                    ],
                    "versions": versions(),
                    "timings": dict(timer.seconds),
                }
                if prompt_source is not None:
                    meta["prompt"] = dict(prompt_source.meta, file=PROMPT_IMAGE_FILE)
                if mesh_skipped is not None:
                    meta["mesh_skipped"] = mesh_skipped
                if device == "cuda":
                    meta["gpu"] = torch.cuda.get_device_name()
                writer.write_json(result.META_FILE, meta)
                check_cancel()
                folder = writer.commit()
                progress("write", total, total)
        except OSError as exc:
            raise MVDPPError(errors.BAD_INPUT, f"Cannot write the result folder {out} ({exc.strerror or exc}).",
                             "Choose a folder you can write to with enough free space.") from exc
    return folder


TEXT_TO_IMAGE_STAGE = "text_to_image"
#: The text-to-image model's own image, next to the normalised input_00.png made from it.
PROMPT_IMAGE_FILE = f"{result.INPUTS_DIR}/prompt_image.png"


def run_text_to_3d(
    pipe,
    t2i_pipe,
    t2i_settings,
    out,
    settings: GenerateSettings,
    staging_dir: Path,
    device: str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    progress: Progress = _no_op_progress,
    should_cancel: ShouldCancel = _never,
    low_vram: bool = False,
) -> Path:
    """Prompt -> condition image (the text-to-image model) -> the usual generate job.

    The generated image is written to ``staging_dir`` first and announced through
    ``progress(TEXT_TO_IMAGE_STAGE, total, total, condition_image=path)`` so that a client can show
    it while the views are made (the server forwards it in the progress event); the result folder
    keeps a copy. The seed drives both models and is recorded once in meta.json.
    """
    from .text_to_image import full_prompt, generate_condition_image

    settings = GenerateSettings(**asdict(settings)).validate()
    t2i_settings.validate()
    out = check_output_folder(out, settings.overwrite)
    if settings.seed is None:
        settings.seed = secrets.randbelow(2**31)
    started = time.perf_counter()
    with cancellation_points(t2i_pipe, should_cancel), translate_out_of_memory("generating the image from the prompt", low_vram):
        image, steps, guidance = generate_condition_image(t2i_pipe, t2i_settings, settings.seed, progress, should_cancel)
    seconds = time.perf_counter() - started
    staging_dir = Path(staging_dir)
    staging_dir.mkdir(parents=True, exist_ok=True)
    staged = staging_dir / f"prompt_image-{secrets.token_hex(4)}.png"
    image.save(staged)
    try:
        progress(TEXT_TO_IMAGE_STAGE, steps, steps, condition_image=str(staged))
    except TypeError:  # a plain (stage, step, total) callback
        progress(TEXT_TO_IMAGE_STAGE, steps, steps)
    if should_cancel():
        raise JobCancelled()
    meta = {"text": t2i_settings.prompt, "full_prompt": full_prompt(t2i_settings.prompt), "model": t2i_settings.model,
            "steps": steps, "guidance": guidance, "seed": settings.seed}
    return run_generate(pipe, [staged], out, settings, device=device, checkpoint=checkpoint, progress=progress,
                        should_cancel=should_cancel, low_vram=low_vram,
                        prompt_source=PromptSource(staged, meta, seconds))


NO_OBJECT = errors.NO_OBJECT


def result_warning(folder: Path) -> str | None:
    """A one-line warning about a result folder that lacks something that was asked for, or None."""
    try:
        meta = json.loads((Path(folder) / result.META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    skipped = meta.get("mesh_skipped")
    return f"No mesh was made: {skipped['message']} {skipped['hint']}" if skipped else None


def check_views_show_an_object(views) -> None:
    """A mesh needs an object in the views; say so clearly rather than fail inside the reconstruction."""
    import numpy as np

    coverage = max(float((np.asarray(view.getchannel("A")) > 127).mean()) for view in views)
    if coverage < 1e-3:
        raise MVDPPError(NO_OBJECT, "The generated views show no object, so no mesh can be built.",
                         "Check that the inputs show one object clearly; try another seed or more steps, "
                         "or skip the mesh (--no-mesh).")


def generate_result(folder: Path) -> dict:
    """The fields of a generate job's result event: the folder, and a warning when it lacks the mesh."""
    fields = {"folder": str(folder)}
    warning = result_warning(folder)
    if warning:
        fields["warning"] = warning
    return fields


class ModelJobs:
    """The model, loaded once, and the job handlers the server dispatches to."""

    def __init__(self, pipe, checkpoint: Path, device: str, low_vram: bool):
        self.pipe = pipe
        self.checkpoint = checkpoint
        self.device = device
        self.low_vram = low_vram
        #: the last text-to-image model used, kept loaded for the next prompt: (name, pipeline)
        self._t2i: tuple[str, object] | None = None
        #: generated condition images live here (the last job's only) until the server exits,
        #: so a client can still read one after the job's result arrived
        self._staging = tempfile.TemporaryDirectory(prefix="mvdpp-serve-")

    @classmethod
    def load(cls, checkpoint=None, device: str = "auto", low_vram: bool = False) -> "ModelJobs":
        pipe, folder, device = load_pipeline(checkpoint, device, low_vram)
        return cls(pipe, folder, device, low_vram)

    def ready_info(self) -> dict:
        return {"device": self.device, "checkpoint": str(self.checkpoint), "low_vram": self.low_vram,
                "resolution": int(self.pipe.resolution)}

    def handlers(self) -> dict:
        return {"generate": self.generate, "reconstruct": self.reconstruct}

    def generate(self, request: dict, progress: Progress, should_cancel: ShouldCancel) -> dict:
        parsed = parse_generate_request(request)
        if parsed.text_to_image is not None:
            from .text_to_image import load_text_to_image

            check_output_folder(parsed.out, parsed.settings.overwrite)  # before a long model load
            model = parsed.text_to_image.model
            if self._t2i is None or self._t2i[0] != model:
                self._t2i = None
                _free_gpu_memory()
                progress(TEXT_TO_IMAGE_STAGE, 0, 0)  # loading (or downloading) the model
                with translate_out_of_memory("loading the text-to-image model", self.low_vram):
                    self._t2i = (model, load_text_to_image(model, self.device, self.low_vram))
            staging = Path(self._staging.name)
            for old in staging.glob("prompt_image-*.png"):
                old.unlink(missing_ok=True)
            folder = run_text_to_3d(self.pipe, self._t2i[1], parsed.text_to_image, parsed.out, parsed.settings, staging,
                                    device=self.device, checkpoint=self.checkpoint, progress=progress,
                                    should_cancel=should_cancel, low_vram=self.low_vram)
            return generate_result(folder)
        folder = run_generate(self.pipe, parsed.images, parsed.out, parsed.settings, device=self.device,
                              checkpoint=self.checkpoint, progress=progress, should_cancel=should_cancel,
                              low_vram=self.low_vram)
        return generate_result(folder)

    def reconstruct(self, request: dict, progress: Progress, should_cancel: ShouldCancel) -> dict:
        unknown = set(request) - {"type", "id", "views_dir", "out", "quality", "overwrite"}
        if unknown:
            raise _bad_request(f"Unknown reconstruct setting(s): {', '.join(sorted(unknown))}.",
                               "Known settings: views_dir, out, quality, overwrite.")
        views_dir, out = request.get("views_dir"), request.get("out")
        if not isinstance(views_dir, str) or not isinstance(out, str) or not views_dir or not out:
            raise _bad_request("'views_dir' (a result folder) and 'out' (a mesh file) are required.", "")
        quality = request.get("quality", "auto")
        if quality not in MESH_QUALITIES:
            raise _bad_request(f"Unknown quality {quality!r}.", f"Choose one of {', '.join(MESH_QUALITIES)}.")
        overwrite = request.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise _bad_request("overwrite must be true or false.", "")
        path = reconstruct_mesh_file(Path(views_dir), Path(out), quality, self.device, overwrite, progress, should_cancel)
        return {"mesh": str(path)}


def reconstruct_mesh_file(views_dir: Path, out: Path, quality: str = "auto", device: str = "cpu", overwrite: bool = False,
                          progress: Progress = _no_op_progress, should_cancel: ShouldCancel = _never) -> Path:
    """Mesh a result folder's views into ``out`` (.glb/.obj/.ply, written atomically)."""
    from ..recon import reconstruct_folder

    out = out.expanduser().absolute()
    if out.exists() and not overwrite:
        raise MVDPPError(errors.OUTPUT_EXISTS, f"{out} already exists.", "Choose another file, or allow overwriting.")
    try:
        with translate_out_of_memory("reconstructing the mesh"):
            reconstruct_folder(views_dir, out, quality=quality, device=device,
                               progress=lambda stage, step, total: progress(f"mesh:{stage}", step, total),
                               should_cancel=should_cancel, view_source="generated")
    except OSError as exc:
        raise MVDPPError(errors.BAD_INPUT, f"Cannot write {out} ({exc.strerror or exc}).", "Choose a writable location.") from exc
    return out
