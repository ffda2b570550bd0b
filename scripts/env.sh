# Creates (once) and updates (only when requirements.txt or backend/pyproject.toml change) the
# project's virtual environment in .venv. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (bpy 5.0.1 supports only 3.11)"'
  echo "[env] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
wanted="$(cat "$ROOT/requirements.txt" "$ROOT/backend/pyproject.toml" | sha256sum | cut -c1-16)"
stamp="$VENV/.mvdpp-env"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "[env] installing pinned packages (first run: a few minutes, ~3 GB)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
  # compat mode puts backend/src on sys.path with a .pth file, so the checkout's code is what runs
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e "$ROOT/backend"
  echo "$wanted" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONUNBUFFERED=1
