"""The project's skeleton: torch-free package import, the extension zip, its install in Blender."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
import zipfile

import pytest

from conftest import ROOT, subprocess_env


def test_import_mvdpp_and_its_shared_modules_does_not_import_torch():
    code = (
        "import sys, mvdpp, mvdpp.rig, mvdpp.result, mvdpp.protocol, mvdpp.errors, mvdpp.paths, mvdpp.cli\n"
        "mvdpp.cli.build_parser()\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'bpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"importing mvdpp pulled in {proc.stdout.strip()}"


def test_cli_runs_as_module_and_prints_version():
    proc = subprocess.run([sys.executable, "-m", "mvdpp", "--version"], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0
    import mvdpp

    assert proc.stdout.strip() == f"mvdpp {mvdpp.__version__}"


def test_manifest_matches_package_versions():
    import mvdpp

    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert manifest["version"] == mvdpp.__version__
    assert manifest["wheels"] == [f"./wheels/mvdpp-{mvdpp.__version__}-py3-none-any.whl"]
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert manifest["permissions"]["files"]


def test_extension_zip_holds_code_manifest_and_backend_wheel(extension_zip):
    names = set(zipfile.ZipFile(extension_zip).namelist())
    assert "blender_manifest.toml" in names
    assert "__init__.py" in names
    wheel = next(n for n in names if n.startswith("wheels/mvdpp-") and n.endswith(".whl"))
    # the bundled wheel carries the torch-free modules the extension imports
    with zipfile.ZipFile(extension_zip) as outer, outer.open(wheel) as inner:
        wheel_names = set(zipfile.ZipFile(inner).namelist())
    for module in ("mvdpp/rig.py", "mvdpp/result.py", "mvdpp/protocol.py"):
        assert module in wheel_names


@pytest.mark.blender
def test_extension_installs_and_enables_in_blender(extension_zip, run_blender):
    script = textwrap.dedent(
        f"""
        import bpy
        import addon_utils
        result = bpy.ops.extensions.package_install_files(
            filepath={str(extension_zip)!r}, repo="user_default", enable_on_install=True)
        assert result == {{"FINISHED"}}, result
        module = "bl_ext.user_default.mvdpp_blender"
        loaded, enabled = addon_utils.check(module)
        print("ENABLED", module in bpy.context.preferences.addons, enabled)
        import glob, os
        site = bpy.utils.user_resource("EXTENSIONS", path=".local")
        print("WHEEL_FILES", glob.glob(os.path.join(site, "lib", "python*", "site-packages", "mvdpp", "rig.py")))
        """
    )
    proc = run_blender(script, backend_on_path=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ENABLED True True" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    # Blender installed the bundled backend wheel into the extensions' shared site-packages
    wheel_line = next(line for line in proc.stdout.splitlines() if line.startswith("WHEEL_FILES"))
    assert "mvdpp/rig.py" in wheel_line, proc.stdout


def test_extension_defaults_match_the_backend():
    """The extension cannot import the backend, so it repeats the generate defaults (its sidebar
    fields take them from DEFAULT_SETTINGS); they must agree."""
    import ast

    from mvdpp.protocol import DEFAULT_GUIDANCE
    from mvdpp.service.job import GenerateSettings

    tree = ast.parse((ROOT / "mvdpp_blender" / "generation.py").read_text())
    assigned = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    extension = ast.literal_eval(assigned["DEFAULT_SETTINGS"])
    assert extension["guidance"] == DEFAULT_GUIDANCE == GenerateSettings().guidance
    assert extension["steps"] == GenerateSettings().steps
