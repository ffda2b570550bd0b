"""Scripting API: generate from image paths and import results, from the Python console or
``blender -b --python script.py``.

    from bl_ext.user_default.mvdpp_blender import api     # "user_default": the repository it was installed to
    collection = api.generate(["/photos/front.jpg", "/photos/back.jpg"], steps=30, seed=1)
    collection = api.generate(prompt="a red ceramic teapot", seed=1)   # text to 3D
    collection = api.import_result("/path/to/result_folder")

``generate`` blocks until the backend is done (it starts the backend on first use and keeps it
warm for the next call); it raises ``api.GenerationError`` (with ``.message`` and ``.hint``) when
something fails and ``api.Cancelled`` when ``should_cancel()`` returned True. In the UI, use the
panel or ``bpy.ops.mvdpp.generate('INVOKE_DEFAULT')`` instead: it runs without blocking.
"""

from __future__ import annotations

import time

import bpy

from . import backend_manager, generation
from .blender import importer
from .generation import GenerationError


class Cancelled(GenerationError):
    """The generation was cancelled; the scene is unchanged."""


def generate(image_paths=None, *, prompt: str | None = None, progress=None, should_cancel=None, timeout: float | None = None,
             context=None, **settings):
    """Generate from 1-10 image files (the first defines azimuth 0), or from a text ``prompt``
    (the preferences' text-to-image model makes the reference image first), and import the result.

    Settings: steps, guidance, guidance_rescale (0-1), seed, scheduler ("dpm++", "ddim", "euler"), mesh_detail ("auto",
    "draft", "standard", "high"), import_views, import_mesh. ``progress(job)`` is called as events
    arrive (``job.stage``, ``job.step``, ``job.total``, ``job.eta_s``); ``should_cancel()``
    returning True cancels. With a prompt, ``job.condition_image_name`` names the generated
    image (in bpy.data.images) as soon as the backend made it; text-to-image settings: t2i_steps,
    t2i_guidance. Returns the new collection.
    """
    context = context or bpy.context
    if prompt is not None:
        if image_paths:
            raise GenerationError("Give either image paths or a prompt, not both")
        job = generation.start([], settings, prompt=prompt)
    else:
        job = generation.start(generation.check_paths(image_paths or []), settings)
    wait(job, progress=progress, should_cancel=should_cancel, timeout=timeout)
    if job.outcome == "cancelled":
        raise Cancelled("The generation was cancelled")
    if job.outcome != "result":
        raise GenerationError(job.error_message or "The backend failed", job.error_hint, job.error_code)
    return generation.import_job_result(context, job)


def wait(job, *, progress=None, should_cancel=None, timeout: float | None = None, interval: float = 0.05) -> None:
    """Poll the backend until ``job`` ends (cancelling it when asked or when ``timeout`` passes)."""
    session = backend_manager.session
    deadline = None if timeout is None else time.monotonic() + timeout
    last_seen = None
    while not job.finished:
        session.poll()
        seen = (job.stage, job.step)
        if progress is not None and seen != last_seen:
            progress(job)
            last_seen = seen
        if (should_cancel is not None and should_cancel()) or (deadline is not None and time.monotonic() > deadline):
            session.cancel()
            deadline = None
        time.sleep(interval)


def import_result(folder, *, import_views: bool = True, import_mesh: bool = True, context=None):
    """Import a result folder (written by ``mvdpp generate`` or the panel) at the 3D cursor."""
    try:
        return importer.import_result(context or bpy.context, folder, import_views=import_views, import_mesh=import_mesh)
    except importer.ImportFailed as exc:
        raise GenerationError(str(exc), "Choose a folder that holds cameras.json and views/") from exc


def backend_state() -> str:
    """NOT_INSTALLED, STOPPED, STARTING, READY or BUSY."""
    return backend_manager.session.state()


def install_backend(pip_arguments: str = "", wait_for_it: bool = True) -> bool:
    """Create the managed environment and install the backend (needs online access unless offline args)."""
    try:
        backend_manager.installer.start(pip_arguments)
    except backend_manager.BackendUnavailable as exc:
        raise GenerationError(exc.message, exc.hint, exc.code) from exc
    if not wait_for_it:
        return False
    ok = backend_manager.installer.wait()
    if not ok:
        raise GenerationError(backend_manager.installer.error, backend_manager.installer.hint, "install_failed")
    return True


def stop_backend() -> None:
    """Stop the warm backend process (it starts again on the next generate)."""
    backend_manager.session.stop()


__all__ = ["generate", "import_result", "wait", "backend_state", "install_backend", "stop_backend",
           "GenerationError", "Cancelled"]
