"""Install Backend: it creates the managed environment and, when pip cannot get the packages,
says why and what to do (here: offline, with an empty wheel folder, so nothing is downloaded)."""

from __future__ import annotations

import textwrap

import pytest

from test_importer import INSTALL, reports

pytestmark = pytest.mark.blender


@pytest.mark.slow
def test_failed_install_says_why_and_how_to_fix(tmp_path, extension_zip, run_blender):
    wheels = tmp_path / "no_wheels"
    wheels.mkdir()
    (tmp_path / "reference.png").write_bytes(b"")  # never read: the backend check comes first
    script = INSTALL.format(zip=str(extension_zip)) + textwrap.dedent(
        f"""
        manager = importlib.import_module("bl_ext.user_default.mvdpp_blender.backend_manager")
        try:
            api.install_backend("--no-index --find-links {wheels}")
            report(outcome="installed")
        except api.GenerationError as exc:
            report(outcome="failed", message=exc.message, hint=exc.hint)
        log = manager.installer.log_path.read_text()
        report(venv_python=manager.managed_python().is_file(), log_mentions_wheel="mvdpp-" in log,
               log_has_pip_error="No matching distribution" in log or "Could not find a version" in log,
               state=api.backend_state())
        try:
            api.generate([{str(wheels)!r} + "/../reference.png"])
        except api.GenerationError as exc:
            report(missing=exc.message)
        """
    )
    proc = run_blender(script, backend_on_path=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = reports(proc)
    assert r["outcome"] == "failed"
    assert "Installing PyTorch, diffusers and the backend" in r["message"] and "failed" in r["message"]
    assert "pip found no matching package" in r["hint"]
    assert r["venv_python"] and r["log_mentions_wheel"] and r["log_has_pip_error"]
    # a half-installed environment is not taken for a working backend
    assert r["state"] == "NOT_INSTALLED" and "not completely installed" in r["missing"]
