#!/usr/bin/env bash
# The main job on a fresh clone: environment (if needed) -> extension zip -> backend on the
# bundled example image with the embedded default model -> result imported through the extension
# into a saved .blend -> a rendered preview PNG. Extra arguments go to `mvdpp generate`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
mkdir -p results
echo "[demo] building the extension zip" >&2
zip_path="$(python tools/build_extension.py --output-dir dist | tail -n 1)"
echo "[demo] generating 32 views and a mesh from examples/example.png" >&2
mvdpp generate examples/example.png --out results/demo --overwrite "$@"
echo "[demo] importing the result into Blender through the extension" >&2
python scripts/demo_blender.py --zip "$zip_path" --result results/demo \
  --blend results/demo.blend --preview results/demo_preview.png
echo "[demo] done: results/demo/ (views/, cameras.json, meta.json, mesh.glb if one was made), results/demo.blend, results/demo_preview.png" >&2
