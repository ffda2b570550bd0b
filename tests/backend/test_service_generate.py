"""`mvdpp generate` and `mvdpp serve` with the tiny model, as real subprocesses on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import subprocess_env
from mvdpp import rig
from mvdpp.client import BACKEND_EXITED, BackendError, BackendProcess
from mvdpp.paths import default_checkpoint
from mvdpp.result import read_result
from test_images import BAD_CASES, object_on, write_bad_file


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("inputs")
    front = folder / "front.png"
    Image.fromarray(object_on((255, 255, 255))).save(front)
    side = folder / "side.jpg"  # an opaque photo-like input: background removal path
    Image.fromarray(object_on((250, 250, 250), box=(40, 20, 60, 60), colour=(30, 30, 200))).save(side, quality=95)
    return [front, side]


def no_partial_folders(parent: Path) -> bool:
    return not any(p.name.startswith(".partial-") for p in parent.iterdir())


# One thread per child: on a shared 2-core machine torch's default thread pool oversubscribes the
# CPU and runs the tiny model ~20x slower.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mvdpp", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env(**CHILD_ENV))


# ------------------------------------------------------------------------------ mvdpp generate


def test_generate_command_writes_a_complete_result_folder(tiny_checkpoint, inputs, tmp_path):
    out = tmp_path / "result"
    proc = run_cli("generate", *inputs, "--out", out, "--checkpoint", tiny_checkpoint, "--steps", 2, "--seed", 7,
                   "--device", "cpu", "--no-mesh")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)  # stdout holds only the folder, for scripts
    assert "denoise: 2/2" in proc.stderr  # the progress report

    result = read_result(out)
    assert [v.camera.index for v in result.views] == list(range(rig.NUM_RIG_VIEWS))
    assert result.image_size == (64, 64) and result.mesh_path is None
    for view in result.views:
        np.testing.assert_allclose(view.c2w, rig.rig_cameras()[view.camera.index].c2w, atol=1e-6)
    first = Image.open(result.views[0].image_path)
    assert first.mode == "RGBA" and first.size == (64, 64)
    assert len(result.input_paths) == 2 and Image.open(result.input_paths[0]).mode == "RGBA"

    meta = result.meta
    assert meta["seed"] == 7 and meta["settings"]["steps"] == 2 and meta["settings"]["mesh"] is False
    assert meta["settings"]["scheduler"] == "dpm++"  # the tiny checkpoint's own sampler
    assert meta["checkpoint"] == str(tiny_checkpoint)
    assert {"mvdpp", "torch", "diffusers", "python"} <= set(meta["versions"])
    assert {"load_inputs", "denoise", "decode", "write"} <= set(meta["timings"])
    assert [i["mask"] for i in meta["inputs"]] == ["plain-background", "plain-background"]
    assert meta["inputs"][1]["source"] == str(inputs[1])
    assert no_partial_folders(tmp_path)


def test_generate_command_errors_are_one_clear_message(tiny_checkpoint, inputs, tmp_path, capsys):
    # In-process through the real entry point (a subprocess each would mostly time torch's import).
    from mvdpp.cli import main

    cases = [
        (["generate", tmp_path / "missing.png", "--out", tmp_path / "a", "--checkpoint", tiny_checkpoint],
         f"{tmp_path / 'missing.png'}: no such file"),
        (["generate", inputs[0], "--out", tmp_path, "--checkpoint", tiny_checkpoint], "already exists"),
        (["generate", inputs[0], "--out", tmp_path / "b", "--checkpoint", tmp_path / "nowhere"], "does not exist"),
        (["generate", *[inputs[0]] * 11, "--out", tmp_path / "c", "--checkpoint", tiny_checkpoint], "1 to 10"),
        (["generate", inputs[0], "--out", tmp_path / "d", "--checkpoint", tiny_checkpoint, "--steps", "0"], "steps"),
    ]
    if default_checkpoint() is None:
        cases.append((["generate", inputs[0], "--out", tmp_path / "e"], "No embedded model is in this build"))
    for args, expected in cases:
        assert main([str(a) for a in args]) == 2
        captured = capsys.readouterr()
        assert expected in captured.err and "hint:" in captured.err and "Traceback" not in captured.err
        assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written anywhere


# ------------------------------------------------------------------------------ mvdpp serve


@pytest.fixture(scope="module")
def opaque_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with its VAE decoder's alpha output pushed to 1.

    Random weights give noise masks that no reconstruction can turn into an object; fully
    opaque views give the reconstruction a well-defined object (the intersection of all view
    frustums), so the real mesh stage runs end to end.
    """
    import torch

    from mvdpp.pipelines import MVDiffusionPPPipeline

    pipe = MVDiffusionPPPipeline.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias[3] = 20.0
    folder = tmp_path_factory.mktemp("opaque_checkpoint")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(opaque_checkpoint):
    backend = BackendProcess(sys.executable, ["--checkpoint", str(opaque_checkpoint), "--device", "cpu"],
                             env=subprocess_env(**CHILD_ENV))
    backend.start()
    try:
        backend.wait_ready(timeout=180)
        yield backend
    finally:
        backend.stop(timeout=10)


def test_serve_is_ready_with_the_model(server, opaque_checkpoint):
    assert server.ready_event["device"] == "cpu"
    assert server.ready_event["checkpoint"] == str(opaque_checkpoint)
    assert server.ready_event["resolution"] == 64
    assert server.state == "ready"
    if sys.platform.startswith("linux"):  # it opens no network port (nor any other socket)
        fd_dir = Path(f"/proc/{server.pid}/fd")
        assert not [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir) if "socket" in os.readlink(fd_dir / fd)]


def test_serve_generate_round_trip_with_mesh_and_reconstruct(server, inputs, tmp_path):
    events = []
    out = tmp_path / "result"
    result = server.generate(inputs, out, steps=2, seed=3, mesh_quality="draft", on_progress=events.append, timeout=300)
    assert result["folder"] == str(out) and result["elapsed_s"] > 0
    stages = [e["stage"] for e in events]
    assert stages[:2] == ["load_inputs", "load_inputs"] and "denoise" in stages and "decode" in stages
    assert any(s.startswith("mesh:") for s in stages) and stages[-1] == "write"
    assert all(e["total"] >= e["step"] >= 0 and e["elapsed_s"] >= 0 for e in events)
    assert [e["step"] for e in events if e["stage"] == "denoise"] == [1, 2]

    folder = read_result(out)
    assert len(folder.views) == 32 and folder.mesh_path is not None
    import trimesh

    mesh = trimesh.load(folder.mesh_path, force="mesh")
    assert len(mesh.vertices) > 0 and np.abs(mesh.vertices).max() <= 0.75
    assert "mesh" in folder.meta["timings"]

    # the reconstruct request re-meshes an existing result folder
    mesh_out = tmp_path / "again.ply"
    event = server.request({"type": "reconstruct", "views_dir": str(out), "out": str(mesh_out), "quality": "draft"},
                           timeout=300)
    assert event["type"] == "result" and event["mesh"] == str(mesh_out) and mesh_out.is_file()
    assert no_partial_folders(tmp_path) and server.state == "ready"


def test_serve_same_seed_same_views(server, inputs, tmp_path):
    def views(name, seed):
        folder = server.generate(inputs[:1], tmp_path / name, steps=2, seed=seed, mesh=False, timeout=300)["folder"]
        return np.stack([np.asarray(Image.open(v.image_path)) for v in read_result(folder).views])

    first, again, other = views("a", 5), views("b", 5), views("c", 6)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_serve_cancel_is_quick_and_leaves_no_folder(server, inputs, tmp_path):
    out = tmp_path / "cancelled"
    job = server.send({"type": "generate", "images": [str(p) for p in inputs], "out": str(out), "steps": 1000, "mesh": False})
    deadline = time.monotonic() + 120
    while not any(e.get("stage") == "denoise" for e in server.poll_events()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    busy = server.send({"type": "generate", "images": [str(inputs[0])], "out": str(tmp_path / "other")})
    assert server.wait_for(busy, timeout=10)["code"] == "busy"
    asked = time.monotonic()
    server.cancel()
    event = server.wait_for(job, timeout=30)
    assert event["type"] == "cancelled"
    assert time.monotonic() - asked < 2.0
    assert not out.exists() and not (tmp_path / "other").exists() and no_partial_folders(tmp_path)
    assert server.state == "ready" and server.ping()["busy"] is False


@pytest.mark.parametrize(
    "change, code, expected",
    [
        ({"images": []}, "bad_input", "0 images"),
        ({"images": ["x.png"] * 11}, "bad_input", "11 images"),
        ({"images": "front.png"}, "bad_request", "'images'"),
        ({"out": None}, "bad_request", "'out'"),
        ({"steps": 0}, "bad_request", "steps"),
        ({"steps": "many"}, "bad_request", "steps"),
        ({"guidance": -1}, "bad_request", "guidance"),
        ({"guidance_rescale": 2}, "bad_request", "guidance_rescale must be a number from 0 to 1"),
        ({"seed": -5}, "bad_request", "seed"),
        ({"scheduler": "magic"}, "bad_request", "magic"),
        ({"mesh_quality": "ultra"}, "bad_request", "ultra"),
        ({"mesh": "yes"}, "bad_request", "mesh"),
        ({"colour": "red"}, "bad_request", "colour"),
    ],
)
def test_serve_bad_requests_get_errors_and_the_server_keeps_running(server, inputs, tmp_path, change, code, expected):
    request = {"type": "generate", "images": [str(inputs[0])], "out": str(tmp_path / "r"), **change}
    event = server.wait_for(server.send(request), timeout=30)
    assert event["type"] == "error" and event["code"] == code and expected in event["message"]
    assert not (tmp_path / "r").exists()
    assert server.ping()["type"] == "pong"


@pytest.mark.parametrize(
    "request_fields, code, expected",
    [
        ({"views_dir": "{tmp}", "out": "{tmp}/m.glb"}, "bad_input", "cameras.json is missing"),
        ({"views_dir": "{tmp}", "out": "{tmp}/m.stl"}, "bad_input", "m.stl"),
        ({"views_dir": "{tmp}", "out": "{tmp}/m.glb", "quality": "ultra"}, "bad_request", "ultra"),
        ({"out": "{tmp}/m.glb"}, "bad_request", "views_dir"),
        ({"views_dir": "{tmp}", "out": "{tmp}/m.glb", "detail": 3}, "bad_request", "detail"),
    ],
)
def test_serve_bad_reconstruct_requests(server, tmp_path, request_fields, code, expected):
    request = {"type": "reconstruct", **{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in request_fields.items()}}
    event = server.wait_for(server.send(request), timeout=30)
    assert event["type"] == "error" and event["code"] == code and expected in event["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", BAD_CASES)
def test_serve_bad_input_files_name_the_file(server, inputs, tmp_path, case):
    path, expected = write_bad_file(tmp_path, case)
    out = tmp_path / "r"
    event = server.wait_for(server.send({"type": "generate", "images": [str(inputs[0]), str(path)], "out": str(out)}),
                            timeout=60)
    assert event["type"] == "error" and event["code"] == "bad_input"
    assert str(path) in event["message"] and expected in event["message"] and event["hint"]
    assert not out.exists() and no_partial_folders(tmp_path)


def test_serve_existing_output_folder(server, inputs, tmp_path):
    (tmp_path / "taken").mkdir()
    event = server.wait_for(server.send({"type": "generate", "images": [str(inputs[0])], "out": str(tmp_path / "taken")}),
                            timeout=30)
    assert event["code"] == "output_exists" and "taken" in event["message"] and "overwrite" in event["hint"]


def test_serve_killed_mid_job_is_an_error_not_a_hang(server, inputs, tmp_path):
    # Runs last in this module: it kills the shared server.
    job = server.send({"type": "generate", "images": [str(inputs[0])], "out": str(tmp_path / "k"), "steps": 1000, "mesh": False})
    deadline = time.monotonic() + 120
    while not any(e.get("stage") == "denoise" for e in server.poll_events()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGKILL)
    event = server.wait_for(job, timeout=15)
    assert event["type"] == "error" and event["code"] == BACKEND_EXITED and event["returncode"] == -signal.SIGKILL
    assert server.state == "stopped"
    with pytest.raises(BackendError):
        server.ping()
