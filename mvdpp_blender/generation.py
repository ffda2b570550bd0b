"""From reference images and settings to a backend request, and from a finished job to the scene.

Shared by the Generate operator (modal) and the scripting API (blocking) so both behave the same.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import bpy

from . import backend_manager
from .blender import importer
from .preferences import get_preferences

MAX_REFERENCE_IMAGES = 10
SETTING_KEYS = ("steps", "guidance", "guidance_rescale", "seed", "scheduler", "mesh_detail", "import_views", "import_mesh")
# The backend's defaults (mvdpp.protocol), repeated here because the extension never imports the backend.
DEFAULT_SETTINGS = {"steps": 30, "guidance": 6.0, "guidance_rescale": 1.0, "seed": None, "scheduler": "auto", "mesh_detail": "auto",
                    "import_views": True, "import_mesh": True,
                    # text to 3D only; None: the text-to-image model's defaults (1 step, no guidance for Turbo models)
                    "t2i_steps": None, "t2i_guidance": None}
#: "owner/name": a Hugging Face hub id (the backend downloads it), not a local folder
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class GenerationError(Exception):
    """Why a generation cannot start or failed (message) and what to do (hint)."""

    def __init__(self, message: str, hint: str = "", code: str = ""):
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def scene_settings(scene) -> dict:
    props = scene.mvdpp
    settings = {key: getattr(props, key) for key in SETTING_KEYS}
    if props.random_seed:
        settings["seed"] = None  # the backend draws it; the imported result records it
    return settings


def image_file(image: bpy.types.Image) -> str:
    """A file the backend can read for this image; packed, generated or edited images are saved out."""
    path = Path(bpy.path.abspath(image.filepath_from_user())) if image.filepath else None
    if path is not None and path.is_file() and image.packed_file is None and not image.is_dirty and image.source == "FILE":
        return str(path)
    folder = backend_manager.user_dir() / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{_safe_name(image.name)}-{int(time.time() * 1000)}.png"
    if image.size[0] == 0 or image.size[1] == 0:
        raise GenerationError(f"The reference image '{image.name}' has no pixels", "Reload or replace it")
    # save_copy writes the pixels without changing the user's image (path, format, packing)
    image.save(filepath=str(target), save_copy=True)
    return str(target)


def reference_paths(images) -> list[str]:
    images = [image for image in images if image is not None]
    if not images:
        raise GenerationError("Add at least one reference image", "Use the + buttons under the reference image list")
    if len(images) > MAX_REFERENCE_IMAGES:
        raise GenerationError(f"{len(images)} reference images given; the model takes at most {MAX_REFERENCE_IMAGES}",
                              "Remove some from the list")
    return [image_file(image) for image in images]


def check_paths(paths) -> list[str]:
    paths = [str(Path(p).absolute()) for p in paths]
    if not paths:
        raise GenerationError("Give at least one reference image path")
    if len(paths) > MAX_REFERENCE_IMAGES:
        raise GenerationError(f"{len(paths)} reference images given; the model takes at most {MAX_REFERENCE_IMAGES}")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise GenerationError(f"Reference image not found: {missing[0]}", "Check the path")
    return paths


def is_hub_id(model: str) -> bool:
    """True when the text-to-image model is a hub id to download rather than a local folder."""
    model = (model or "").strip()
    return bool(model) and not Path(bpy.path.abspath(model)).expanduser().exists() and bool(HUB_ID.match(model))


def prompt_fields(prompt: str, prefs) -> dict:
    """The generate request's text-to-image keys; enforces Blender's online-access rule for hub ids."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise GenerationError("The prompt is empty", "Describe one object, e.g. 'a red ceramic teapot'")
    model = (getattr(prefs, "t2i_model", "") or "").strip() if prefs is not None else ""
    if not model:
        raise GenerationError("No text-to-image model is set",
                              "Set one in the MVD++ preferences: a diffusers pipeline folder or a hub id such as stabilityai/sd-turbo")
    if is_hub_id(model):
        if not bpy.app.online_access:
            raise GenerationError(f"The text-to-image model {model} must be downloaded, but Blender's online access is off",
                                  "Allow Online Access (Preferences > System > Network), or set the model to a local folder")
        return {"prompt": prompt, "t2i_model": model}
    return {"prompt": prompt, "t2i_model": bpy.path.abspath(model)}


def new_result_folder(prefs, first_image: str) -> Path:
    base = backend_manager.results_dir(prefs)
    stem = _safe_name(Path(first_image).stem)[:40] or "result"
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"
    folder, n = base / name, 1
    while folder.exists():
        n += 1
        folder = base / f"{name}-{n}"
    return folder


def build_requests(paths: list[str], out: Path, settings: dict, prompt: dict | None = None) -> tuple[dict, dict | None]:
    """The protocol's generate request (mvdpp.protocol), plus a reconstruct request when the mesh
    is wanted at a detail other than automatic (generate always reconstructs at "auto").
    ``prompt``: the text-to-image keys (prompt_fields) instead of images."""
    request = {
        **({"images": list(paths)} if prompt is None else dict(prompt)),
        "out": str(out),
        "steps": int(settings["steps"]),
        "guidance": float(settings["guidance"]),
        "guidance_rescale": float(settings["guidance_rescale"]),
        "mesh": bool(settings["import_mesh"]),
    }
    if settings.get("seed") is not None:  # None: the backend draws one and records it in meta.json
        request["seed"] = int(settings["seed"])
    if settings.get("scheduler") not in (None, "auto"):  # "auto": the checkpoint's own sampler
        request["scheduler"] = str(settings["scheduler"])
    if prompt is not None and settings.get("t2i_steps") is not None:
        request["t2i_steps"] = int(settings["t2i_steps"])
    if prompt is not None and settings.get("t2i_guidance") is not None:
        request["t2i_guidance"] = float(settings["t2i_guidance"])
    reconstruct = None
    if settings["import_mesh"] and settings.get("mesh_detail", "auto") != "auto":
        request["mesh"] = False
        reconstruct = {"type": "reconstruct", "quality": str(settings["mesh_detail"])}
    return request, reconstruct


def start(paths: list[str], settings: dict, prefs=None, prompt: str | None = None) -> backend_manager.GenerateJob:
    """Submit a job to the (warm or starting) backend; raises GenerationError with the fix.

    With ``prompt`` (and no paths) the backend first makes the reference image with the
    text-to-image model of the preferences; the panel shows it as soon as it exists."""
    prefs = prefs if prefs is not None else get_preferences()
    full = dict(DEFAULT_SETTINGS)
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise GenerationError(f"Unknown setting(s): {', '.join(sorted(unknown))}",
                              f"Use {', '.join(SETTING_KEYS + ('t2i_steps', 't2i_guidance'))}")
    full.update(settings)
    fields = None
    if prompt is not None:
        if paths:
            raise GenerationError("Give either reference images or a prompt, not both")
        fields = prompt_fields(prompt, prefs)
    out = new_result_folder(prefs, paths[0] if fields is None else fields["prompt"][:40])
    request, reconstruct = build_requests(paths, out, full, fields)
    try:
        return backend_manager.session.submit(prefs, request, settings=dict(full, images=list(paths), prompt=prompt),
                                              reconstruct_request=reconstruct)
    except backend_manager.BackendUnavailable as exc:
        raise GenerationError(exc.message, exc.hint, exc.code) from exc


def import_job_result(context, job: backend_manager.GenerateJob):
    """Import a finished job's folder; returns the collection."""
    settings = job.settings
    # meta.json (written by the backend) holds the seed actually used and the full settings
    extra = {"mesh_detail": settings.get("mesh_detail", "auto")}
    if settings.get("images"):  # a prompt job's source is the generated image, recorded in meta.json
        extra["source_images"] = settings["images"]
    if settings.get("prompt"):
        extra["prompt"] = settings["prompt"]
    if job.warning:
        extra["warning"] = job.warning
    try:
        return importer.import_result(
            context, job.folder, import_views=settings.get("import_views", True),
            import_mesh=settings.get("import_mesh", True), extra_properties=extra,
        )
    except importer.ImportFailed as exc:
        raise GenerationError(f"The result could not be imported: {exc}", "The folder may be incomplete; generate again") from exc


def sync_status(window_manager) -> None:
    """Copy the session's state into the window manager's status (what the panel draws)."""
    status = getattr(window_manager, "mvdpp_status", None)
    if status is None:
        return
    session = backend_manager.session
    job = session.job
    running = job is not None and not job.finished
    _assign(status, "running", running)
    _assign(status, "backend_state", session.state_label())
    if running:
        _assign(status, "progress", job.fraction)
        _assign(status, "status_text", job.status_text())
    if job is not None and job.condition_image_name:
        _assign(status, "condition_image", job.condition_image_name)
    if session.last_error:
        _assign(status, "last_error", session.last_error)
        _assign(status, "last_hint", session.last_hint)


def _assign(owner, name, value) -> None:
    # writing only on change keeps the redraws (and the undo-free status) quiet
    if getattr(owner, name) != value:
        setattr(owner, name, value)


def report_error(window_manager, message: str, hint: str) -> None:
    status = getattr(window_manager, "mvdpp_status", None)
    if status is not None:
        status.last_error, status.last_hint = message, hint


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")


# --- the background timer: keeps the status fresh and drains the backend's events ---------------


def _tick():
    try:
        backend_manager.session.poll()
        wm = bpy.context.window_manager
        if wm is not None:
            sync_status(wm)
            for window in wm.windows:
                for area in window.screen.areas:
                    if area.type == "VIEW_3D":
                        for region in area.regions:
                            if region.type == "UI":
                                region.tag_redraw()
    except Exception as exc:  # a timer that raises is dropped by Blender: report and keep going
        print(f"MVD++: status update failed: {exc}")
    session = backend_manager.session
    return 0.2 if session.process is not None or (session.job and not session.job.finished) else 1.0


def register():
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=1.0, persistent=True)


def unregister():
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
