#!/usr/bin/env bash
# Sets up the environment (if needed) and runs the whole test suite. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec python -m pytest tests "$@"
