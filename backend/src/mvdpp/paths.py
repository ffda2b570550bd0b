"""Where the backend finds its bundled files. Standard library only."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The embedded default checkpoint (a diffusers pipeline folder) shipped inside the package.
DEFAULT_CHECKPOINT_DIR = PACKAGE_DIR / "weights" / "default"


def default_checkpoint() -> Path | None:
    """The embedded default checkpoint folder, or None when this build ships none."""
    return DEFAULT_CHECKPOINT_DIR if (DEFAULT_CHECKPOINT_DIR / "model_index.json").is_file() else None
