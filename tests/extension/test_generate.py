"""Generate end to end from inside Blender against the real backend subprocess (tiny model, CPU):
the operator imports a result, a cancelled job leaves the scene untouched, and a missing or broken
backend interpreter tells the user how to install it."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_importer import INSTALL, reports

pytestmark = pytest.mark.blender

SNAPSHOT = textwrap.dedent(
    """
    def snapshot():
        return {kind: sorted(x.name for x in getattr(bpy.data, kind))
                for kind in ("objects", "collections", "images", "meshes", "materials", "cameras")}
    """
)


@pytest.fixture(scope="module")
def opaque_tiny_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with its VAE's alpha output pushed to 1: random weights give noise
    masks no reconstruction can make an object of; fully opaque views give a well-defined one
    (the intersection of the view frustums), so the real mesh stage runs."""
    import torch

    from mvdpp.pipelines import MVDiffusionPPPipeline

    pipe = MVDiffusionPPPipeline.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias[3] = 20.0
    folder = tmp_path_factory.mktemp("opaque_tiny_checkpoint")
    pipe.save_pretrained(folder)
    return folder


def reference_image(path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[12:52, 20:44] = (200, 60, 40, 255)
    rgba[20:30, 26:38] = (30, 160, 220, 255)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.mark.slow
def test_generate_cancel_and_backend_errors(tmp_path, extension_zip, run_blender, opaque_tiny_checkpoint):
    image = reference_image(tmp_path / "reference.png")
    not_python = tmp_path / "not_python"
    not_python.write_text("#!/bin/sh\necho 'this is not the MVD++ backend' >&2\nexit 3\n")
    os.chmod(not_python, 0o755)
    script = INSTALL.format(zip=str(extension_zip)) + SNAPSHOT + textwrap.dedent(
        f"""
        prefs = bpy.context.preferences.addons["bl_ext.user_default.mvdpp_blender"].preferences
        scene = bpy.context.scene

        # 0. installing needs online access (off here), and says how to turn it on or go offline
        try:
            api.install_backend()
        except api.GenerationError as exc:
            report(online_access=bpy.app.online_access, install_message=exc.message, install_hint=exc.hint)

        report(startup_s=time.monotonic() - T0)
        # 1. nothing installed: the managed environment is missing -> the install hint
        prefs.backend_source = "MANAGED"
        try:
            api.generate([{str(image)!r}])
        except api.GenerationError as exc:
            report(missing_message=exc.message, missing_hint=exc.hint, state_missing=api.backend_state())

        t = time.monotonic()
        # 2. a broken interpreter (not a Python with mvdpp): the backend dies -> the install hint
        prefs.backend_source = "CUSTOM"
        prefs.custom_python = {str(not_python)!r}
        try:
            api.generate([{str(image)!r}])
        except api.GenerationError as exc:
            report(broken_message=exc.message, broken_hint=exc.hint, broken_s=time.monotonic() - t)

        # 3. a working interpreter but a checkpoint that does not exist: the backend's own reason
        prefs.custom_python = {sys.executable!r}
        prefs.checkpoint = {str(tmp_path / "no_such_checkpoint")!r}
        prefs.device = "cpu"
        try:
            api.generate([{str(image)!r}])
        except api.GenerationError as exc:
            report(checkpoint_message=exc.message, checkpoint_hint=exc.hint)

        # 4. the real backend with the tiny model on the CPU, through the operator as a script would
        prefs.checkpoint = {str(opaque_tiny_checkpoint)!r}
        prefs.device = "cpu"
        prefs.results_folder = {str(tmp_path / "results")!r}
        props = scene.mvdpp
        props.images.add().image = bpy.data.images.load({str(image)!r})
        props.steps, props.seed, props.guidance_rescale = 2, 5, 0.25
        props.mesh_detail = "draft"  # the mesh comes from a follow-up reconstruct request at this detail
        started = time.monotonic()
        result = bpy.ops.mvdpp.generate()
        status = bpy.context.window_manager.mvdpp_status
        collection = next(c for c in bpy.data.collections if c.name.startswith("MVD++ ") and not c.name.endswith("views"))
        cameras, planes = importer.view_objects(collection)
        meshes = [o for o in collection.all_objects if o.type == "MESH" and "mvdpp_view_index" not in o]
        root = next(o for o in collection.objects if o.type == "EMPTY")
        report(op_result=sorted(result), cameras=len(cameras), planes=len(planes), meshes=len(meshes),
               seed=root.get("mvdpp_seed"), steps=root.get("mvdpp_steps"), folder=root.get("mvdpp_folder"),
               state_after=api.backend_state(), generate_s=time.monotonic() - started, last_result=status.last_result)

        # 5. cancel mid-denoising (backend warm): the scene is exactly as before
        before = snapshot()
        started_cancel = time.monotonic()
        seen = []
        def progress(job):
            if not seen:  # one job at a time: the operator is disabled and a second job is refused
                try:
                    api.generate([{str(image)!r}])
                    second = "accepted"
                except api.GenerationError as exc:
                    second = exc.message
                report(status_text=job.status_text(), poll_while_running=bpy.ops.mvdpp.generate.poll(), second_job=second, state_running=api.backend_state())
            seen.append(job.stage)
        try:
            api.generate([{str(image)!r}], steps=400, import_mesh=False, progress=progress,
                         should_cancel=lambda: "denoise" in seen)
            report(cancel_outcome="finished")
        except api.Cancelled:
            report(cancel_outcome="cancelled")
        report(cancel_s=time.monotonic() - started_cancel, scene_unchanged=snapshot() == before, stages_seen=sorted(set(seen)), state_after_cancel=api.backend_state())
        api.stop_backend()
        """
    )
    # one thread per library: on a shared 2-core machine oversubscribed threads make torch ~10x slower
    proc = run_blender(script, timeout=300, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = reports(proc)
    print("timings:", {k: v for k, v in r.items() if k.endswith("_s")})

    assert r["online_access"] is False
    assert "online access is off" in r["install_message"] and "Allow Online Access" in r["install_hint"]
    assert "not installed" in r["missing_message"] and "Install Backend" in r["missing_hint"]
    assert r["state_missing"] == "NOT_INSTALLED"
    assert "could not start" in r["broken_message"] and "Install Backend" in r["broken_hint"]

    assert "no_such_checkpoint" in r["checkpoint_message"] and "does not exist" in r["checkpoint_message"]
    assert r["checkpoint_hint"] and "Install Backend" not in r["checkpoint_hint"]

    assert r["op_result"] == ["FINISHED"]
    assert (r["cameras"], r["planes"], r["meshes"]) == (32, 32, 1)
    assert (r["seed"], r["steps"]) == (5, 2)
    assert r["folder"] == r["last_result"] and r["folder"].startswith(str(tmp_path / "results"))
    assert r["state_after"] == "READY"

    # mesh detail "draft": generate ran without a mesh, the follow-up reconstruct request made it
    meta = json.loads((Path(r["folder"]) / "meta.json").read_text())
    assert meta["settings"]["mesh"] is False and (Path(r["folder"]) / "mesh.glb").is_file()
    assert meta["settings"]["guidance_rescale"] == 0.25  # the panel's setting reached the backend
    assert r["status_text"]
    assert r["poll_while_running"] is False and "already running" in r["second_job"] and r["state_running"] == "BUSY"
    assert r["cancel_outcome"] == "cancelled"
    assert "denoise" in r["stages_seen"]
    assert r["scene_unchanged"]
    assert r["state_after_cancel"] == "READY"
