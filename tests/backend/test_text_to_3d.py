"""Text to 3D: a prompt -> a condition image (a real diffusers text-to-image pipeline, tiny and
random, built here) -> the usual job. Random weights draw noise, not an object on white, so the
tests that need an object put a stand-in `rembg` (the optional segmentation package the input
path already supports) on the backend's path: it cuts out a centred disc. Without it the noise
image gets the input path's clear background error, which is tested too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BACKEND_SRC, subprocess_env
from mvdpp import protocol
from mvdpp.cli import main
from mvdpp.client import BackendError, BackendProcess
from mvdpp.errors import JobCancelled, MVDPPError
from mvdpp.result import read_result
from tiny_t2i import FAKE_REMBG, build_tiny_text_to_image

CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

@pytest.fixture(scope="module")
def tiny_t2i(tmp_path_factory) -> Path:
    return build_tiny_text_to_image(tmp_path_factory.mktemp("t2i") / "tiny_sd")


@pytest.fixture(scope="module")
def segmenter_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake_rembg")
    (folder / "rembg.py").write_text(FAKE_REMBG)
    return folder


def env_with_segmenter(segmenter_path: Path) -> dict:
    env = subprocess_env(**CHILD_ENV)
    env["PYTHONPATH"] = f"{segmenter_path}:{BACKEND_SRC}"
    return env


def test_loading_and_generating_a_condition_image(tiny_t2i):
    from mvdpp.service.text_to_image import (PROMPT_SUFFIX, TextToImageSettings, default_steps_and_guidance,
                                             full_prompt, generate_condition_image, load_text_to_image)

    pipe = load_text_to_image(str(tiny_t2i), "cpu")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert default_steps_and_guidance(pipe, str(tiny_t2i)) == (50, 7.5)  # not a few-step model: SD's own call defaults
    assert default_steps_and_guidance(pipe, "stabilityai/sd-turbo") == (1, 0.0)
    assert full_prompt("a red teapot.") == "a red teapot" + PROMPT_SUFFIX

    seen = []
    settings = TextToImageSettings("a red ceramic teapot", str(tiny_t2i), steps=2, guidance=0.0).validate()
    image, steps, guidance = generate_condition_image(pipe, settings, seed=3, progress=lambda *a: seen.append(a))
    assert image.mode == "RGB" and image.size == (64, 64) and (steps, guidance) == (2, 0.0)
    assert seen[-1] == ("text_to_image", 2, 2)
    again, _, _ = generate_condition_image(pipe, settings, seed=3)
    other, _, _ = generate_condition_image(pipe, settings, seed=4)
    assert np.array_equal(np.asarray(image), np.asarray(again))  # the seed decides the image
    assert not np.array_equal(np.asarray(image), np.asarray(other))
    with pytest.raises(JobCancelled):
        generate_condition_image(pipe, settings, seed=3, should_cancel=lambda: True)


def test_bad_models_and_prompts_are_clear_errors(tiny_t2i, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from mvdpp.service.text_to_image import TextToImageSettings, load_text_to_image

    # nothing can be downloaded here: a hub id fails with what to do
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MVDPPError) as hub:
        load_text_to_image("stabilityai/sd-turbo", "cpu")
    assert "could not be downloaded" in hub.value.message and "local folder" in hub.value.hint
    with pytest.raises(MVDPPError, match="does not exist"):
        load_text_to_image(str(tmp_path / "no_such_model"), "cpu")
    (tmp_path / "not_a_pipeline").mkdir()
    with pytest.raises(MVDPPError, match="model_index.json is missing"):
        load_text_to_image(str(tmp_path / "not_a_pipeline"), "cpu")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "model_index.json").write_text((tiny_t2i / "model_index.json").read_text())
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(MVDPPError, match="no .safetensors"):
        load_text_to_image(str(pickled), "cpu")
    remote = tmp_path / "remote_code"
    remote.mkdir()
    (remote / "model_index.json").write_text(json.dumps({"_class_name": "X", "unet": ["evil_package", "Net"]}))
    with pytest.raises(MVDPPError, match="does not trust"):
        load_text_to_image(str(remote), "cpu")
    with pytest.raises(MVDPPError, match="prompt is empty"):
        TextToImageSettings("  ", str(tiny_t2i)).validate()


@pytest.mark.parametrize("args, expected", [
    (["in.png", "--prompt", "a teapot", "--t2i", "m"], "either reference images or --prompt"),
    (["--prompt", "a teapot"], "needs a text-to-image model"),
    (["in.png", "--t2i", "m"], "need --prompt"),
    ([], "No reference images given"),
])
def test_cli_images_and_prompt_exclude_each_other(args, expected, tmp_path, capsys):
    assert main(["generate", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "hint:" in err and "Traceback" not in err


def test_generate_command_from_a_prompt(tiny_checkpoint, tiny_t2i, segmenter_path, tmp_path):
    out = tmp_path / "result"
    command = [sys.executable, "-m", "mvdpp", "generate", "--prompt", "a red ceramic teapot", "--t2i", str(tiny_t2i),
               "--t2i-steps", "2", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--steps", "1",
               "--seed", "11", "--device", "cpu", "--no-mesh"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env_with_segmenter(segmenter_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "text_to_image: 2/2" in proc.stderr

    result = read_result(out)
    prompt_image = out / "inputs" / "prompt_image.png"
    assert Image.open(prompt_image).size == (64, 64)
    assert len(result.input_paths) == 1 and Image.open(result.input_paths[0]).mode == "RGBA"
    meta = result.meta
    assert meta["prompt"]["text"] == "a red ceramic teapot" and meta["prompt"]["model"] == str(tiny_t2i)
    assert (meta["prompt"]["steps"], meta["prompt"]["guidance"], meta["prompt"]["seed"]) == (2, 7.5, 11)
    assert meta["prompt"]["file"] == "inputs/prompt_image.png" and meta["seed"] == 11
    assert meta["inputs"][0]["mask"] == "rembg" and meta["inputs"][0]["source"] == str(prompt_image)
    assert "text_to_image" in meta["timings"]

    # without a segmenter, the noise image of random weights has no plain background: the input
    # path's clear error, and no result folder
    proc = subprocess.run([*command[:-7], "--out", str(tmp_path / "noise"), "--steps", "1", "--device", "cpu", "--no-mesh"],
                          capture_output=True, text=True, timeout=300, env=subprocess_env(**CHILD_ENV))
    assert proc.returncode == 2, proc.stderr
    assert "background is not a plain colour" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "noise").exists()


def test_server_generates_from_a_prompt_and_announces_the_condition_image(tiny_checkpoint, tiny_t2i, segmenter_path, tmp_path):
    backend = BackendProcess(sys.executable, ["--checkpoint", str(tiny_checkpoint), "--device", "cpu"],
                             env=env_with_segmenter(segmenter_path))
    backend.start()
    try:
        backend.wait_ready(timeout=180)
        shown = []

        def on_event(event):
            if event.get("type") == protocol.PROGRESS and event.get("condition_image"):
                # the image exists as soon as it is announced, long before the result
                shown.append((event["stage"], np.asarray(Image.open(event["condition_image"])).shape))

        stages = []
        request = {"type": "generate", "prompt": "a red ceramic teapot", "t2i_model": str(tiny_t2i), "t2i_steps": 1,
                   "out": str(tmp_path / "served"), "steps": 1, "seed": 2, "mesh": False}
        event = backend.request(request, timeout=240, on_event=lambda e: (stages.append(e.get("stage")), on_event(e)))
        assert event["type"] == protocol.RESULT, event
        assert shown == [("text_to_image", (64, 64, 3))]
        assert stages.index("text_to_image") < stages.index("denoise")
        meta = json.loads((tmp_path / "served" / "meta.json").read_text())
        assert meta["prompt"]["text"] == "a red ceramic teapot"

        # both images and a prompt: a bad request, and the server keeps serving
        with pytest.raises(BackendError, match="not both"):
            backend.request(dict(request, images=["/a.png"], out=str(tmp_path / "x")), timeout=30)
        assert backend.ping()["type"] == protocol.PONG
    finally:
        backend.stop()


def test_generate_requests_with_a_prompt_are_validated():
    from mvdpp.service.job import parse_generate_request

    parsed = parse_generate_request({"type": "generate", "prompt": " a teapot ", "t2i_model": "org/model", "t2i_steps": 2,
                                     "out": "/tmp/x", "seed": 1})
    assert parsed.images == [] and parsed.text_to_image.prompt == "a teapot" and parsed.text_to_image.steps == 2
    assert parsed.text_to_image.guidance is None  # the model's default
    for request, expected in [
        ({"prompt": "a teapot", "out": "/tmp/x"}, "needs a text-to-image model"),
        ({"prompt": "", "t2i_model": "org/model", "out": "/tmp/x"}, "prompt is empty"),
        ({"prompt": "a teapot", "t2i_model": "org/model", "t2i_steps": 0, "out": "/tmp/x"}, "steps must be"),
        ({"images": ["/a.png"], "t2i_guidance": 1.0, "out": "/tmp/x"}, "needs a 'prompt'"),
        ({"images": [], "out": "/tmp/x"}, "0 images given"),
    ]:
        with pytest.raises(MVDPPError, match=expected):
            parse_generate_request({"type": "generate", **request})


def test_cancel_while_making_the_image_leaves_nothing(tiny_checkpoint, tiny_t2i, tmp_path):
    from mvdpp.service.job import GenerateSettings, load_pipeline, run_text_to_3d
    from mvdpp.service.text_to_image import TextToImageSettings, load_text_to_image

    pipe, _, _ = load_pipeline(tiny_checkpoint, "cpu")
    t2i = load_text_to_image(str(tiny_t2i), "cpu")
    seen = []
    with pytest.raises(JobCancelled):
        run_text_to_3d(pipe, t2i, TextToImageSettings("a teapot", str(tiny_t2i), steps=5), tmp_path / "out",
                       GenerateSettings(steps=1, mesh=False), tmp_path / "staging",
                       progress=lambda *args, **extra: seen.append(args), should_cancel=lambda: len(seen) >= 2)
    assert seen[-1][0] == "text_to_image" and seen[-1][1] < 5  # stopped inside the text-to-image model
    assert not (tmp_path / "out").exists() and not list((tmp_path / "staging").glob("*.png"))
