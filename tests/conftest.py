"""Shared test fixtures. Tests run against the checkout's code (backend/src first on sys.path),
so they work from any worktree whatever the virtual environment has installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKEND_SRC = ROOT / "backend" / "src"
sys.path.insert(0, str(BACKEND_SRC))


def subprocess_env(**extra: str) -> dict:
    """Environment for child processes: this checkout's backend first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BACKEND_SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    """The extension zip, built once per test session by the project's own build command."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_extension.py"), "--output-dir", str(out)],
        capture_output=True, text=True, env=subprocess_env(), cwd=ROOT,
    )
    assert proc.returncode == 0, f"extension build failed:\n{proc.stdout}\n{proc.stderr}"
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def run_blender(tmp_path):
    """Run a Python script in a fresh bpy process (Blender state is global, so each gets its own).

    BLENDER_USER_RESOURCES points at a temporary folder so nothing lands in the home folder.
    Returns the CompletedProcess; the script reports back through stdout or files. With
    ``backend_on_path=False`` the checkout's backend is not on PYTHONPATH (the script then sees
    only what Blender provides, such as an installed extension's wheels).
    """

    def run(script: str, timeout: float = 600, backend_on_path: bool = True, **env: str) -> subprocess.CompletedProcess:
        resources = tmp_path / "blender_user"
        resources.mkdir(exist_ok=True)
        child_env = subprocess_env(BLENDER_USER_RESOURCES=str(resources), **env)
        if not backend_on_path:  # only what Blender itself provides (e.g. an installed extension's wheels)
            child_env.pop("PYTHONPATH", None)
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=child_env, cwd=tmp_path)

    return run


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised pipeline of the ``tiny`` preset saved as a diffusers folder.

    It produces noise-like views but exercises every real code path (loading, sampling,
    decoding, reconstruction, serving, importing) in seconds on the CPU.
    """
    from mvdpp.presets import build_pipeline

    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    build_pipeline("tiny", seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: more torch threads only add contention on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
