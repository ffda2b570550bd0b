"""Text to 3D from inside Blender against the real backend (tiny checkpoint, tiny random
text-to-image pipeline, CPU): the prompt reaches the backend, the generated reference image is
loaded as a Blender image while the job runs, and a hub id respects online access."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import BACKEND_SRC, ROOT
from test_importer import INSTALL, reports

sys.path.insert(0, str(ROOT / "tests" / "backend"))
from tiny_t2i import FAKE_REMBG, build_tiny_text_to_image  # noqa: E402

pytestmark = pytest.mark.blender


@pytest.mark.slow
def test_generate_from_a_prompt_in_blender(tmp_path, extension_zip, run_blender, tiny_checkpoint):
    tiny_t2i = build_tiny_text_to_image(tmp_path / "tiny_sd")
    segmenter = tmp_path / "segmenter"
    segmenter.mkdir()
    (segmenter / "rembg.py").write_text(FAKE_REMBG)  # random weights draw noise: a stand-in cut-out
    script = INSTALL.format(zip=str(extension_zip)) + textwrap.dedent(
        f"""
        prefs = bpy.context.preferences.addons["bl_ext.user_default.mvdpp_blender"].preferences
        prefs.backend_source = "CUSTOM"
        prefs.custom_python = {sys.executable!r}
        prefs.checkpoint = {str(tiny_checkpoint)!r}
        prefs.device = "cpu"
        prefs.results_folder = {str(tmp_path / "results")!r}

        # 1. a hub id needs online access (off here): refused before anything starts
        prefs.t2i_model = "stabilityai/sd-turbo"
        try:
            api.generate(prompt="a red ceramic teapot")
        except api.GenerationError as exc:
            report(hub_message=exc.message, hub_hint=exc.hint, hub_state=api.backend_state())

        # 2. a local folder needs no online access: the blocking api path
        prefs.t2i_model = {str(tiny_t2i)!r}
        seen = {{"stages": []}}
        session = importlib.import_module("bl_ext.user_default.mvdpp_blender.backend_manager").session
        handle = session._handle
        def watching_handle(event):  # every event in order, and whether the image was loaded by then
            handle(event)
            job = session.job
            seen["stages"].append(event.get("stage"))
            if job is not None and job.condition_image_name and "image" not in seen:
                image = bpy.data.images[job.condition_image_name]
                seen["image"] = dict(name=image.name, size=list(image.size), packed=image.packed_file is not None,
                                     stage=event.get("stage"), sent=job.request)
        session._handle = watching_handle
        collection = api.generate(prompt="a red ceramic teapot", steps=1, t2i_steps=1, seed=3, import_mesh=False)
        session._handle = handle
        root = next(o for o in collection.objects if o.type == "EMPTY")
        report(seen=seen, prompt=root.get("mvdpp_prompt"), folder=root.get("mvdpp_folder"))

        # 3. the panel's way: Text mode and the operator; the status names the image for the panel
        props = bpy.context.scene.mvdpp
        props.source, props.prompt = "PROMPT", "a small wooden chair"
        props.steps, props.import_mesh = 1, False
        result = bpy.ops.mvdpp.generate()
        status = bpy.context.window_manager.mvdpp_status
        report(op_result=sorted(result), status_image=status.condition_image,
               status_image_size=list(bpy.data.images[status.condition_image].size), last_result=status.last_result)
        api.stop_backend()
        """
    )
    env_path = f"{segmenter}:{BACKEND_SRC}"
    proc = run_blender(script, timeout=300, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=env_path,
                       HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = reports(proc)

    assert "online access is off" in r["hub_message"] and "local folder" in r["hub_hint"]
    assert r["hub_state"] == "STOPPED"  # refused before the backend was started

    image = r["seen"]["image"]
    assert image["size"] == [64, 64] and image["packed"]
    assert image["stage"] == "text_to_image"  # shown before the views come in
    assert "denoise" in r["seen"]["stages"][r["seen"]["stages"].index("text_to_image"):]
    sent = image["sent"]
    assert sent["prompt"] == "a red ceramic teapot" and sent["t2i_model"] == str(tiny_t2i) and "images" not in sent
    assert sent["t2i_steps"] == 1
    assert r["prompt"] == "a red ceramic teapot"
    meta = json.loads((Path(r["folder"]) / "meta.json").read_text())
    assert meta["prompt"]["text"] == "a red ceramic teapot" and (Path(r["folder"]) / "inputs" / "prompt_image.png").is_file()

    assert r["op_result"] == ["FINISHED"]
    assert r["status_image"].startswith("MVD++ Prompt Image") and r["status_image_size"] == [64, 64]
    meta = json.loads((Path(r["last_result"]) / "meta.json").read_text())
    assert meta["prompt"]["text"] == "a small wooden chair"
