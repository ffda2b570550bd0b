"""Build the installable Blender extension zip: ``python tools/build_extension.py``.

1. builds the backend's pure-Python wheel into ``wheels/`` (the manifest lists it),
2. stages ``mvdpp_blender/`` + ``blender_manifest.toml`` + ``wheels/`` in ``build/extension``,
3. runs Blender's own extension builder (shipped inside the bpy wheel) and then its validator.

Prints the path of ``dist/mvdpp_blender-<version>.zip``. Needs the project's environment (bpy).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def blender_ext_cli() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bpy is not installed in this Python; run scripts/test.sh once to create .venv")
    bpy_dir = Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not candidates:
        sys.exit(f"Blender's extension tool was not found under {bpy_dir}")
    return candidates[-1]


def build_backend_wheel(manifest: dict) -> Path:
    wheels_dir = ROOT / "wheels"
    wheels_dir.mkdir(exist_ok=True)
    for old in wheels_dir.glob("mvdpp-*.whl"):
        old.unlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels_dir), str(ROOT / "backend")],
        check=True,
    )
    # setuptools leaves its build tree inside backend/; it is stale by the next build
    shutil.rmtree(ROOT / "backend" / "build", ignore_errors=True)
    built = sorted(wheels_dir.glob("mvdpp-*.whl"))
    listed = [Path(w).name for w in manifest.get("wheels", [])]
    if [w.name for w in built] != listed:
        sys.exit(f"the manifest lists {listed} but the build made {[w.name for w in built]}: update blender_manifest.toml")
    return built[0]


def stage(stage_dir: Path) -> None:
    shutil.rmtree(stage_dir, ignore_errors=True)
    shutil.copytree(ROOT / "mvdpp_blender", stage_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "blender_manifest.toml", stage_dir / "blender_manifest.toml")
    shutil.copytree(ROOT / "wheels", stage_dir / "wheels", ignore=shutil.ignore_patterns(".*", "*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)

    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    build_backend_wheel(manifest)
    stage_dir = ROOT / "build" / "extension"
    stage(stage_dir)

    cli = blender_ext_cli()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    zip_path = args.output_dir / f"{manifest['id']}-{manifest['version']}.zip"
    zip_path.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, str(cli), "build", "--source-dir", str(stage_dir), "--output-filepath", str(zip_path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([sys.executable, str(cli), "validate", str(zip_path)], check=True)
    print(zip_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
