"""What the backend agrees to load: local diffusers pipeline folders of safetensors weights whose
model_index.json names only trusted libraries. Never pickles, never remote code."""

from __future__ import annotations

import json
from pathlib import Path

from .. import errors
from ..errors import MVDPPError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_pipeline_folder(folder: Path, *, what: str, allowed_libraries: tuple[str, ...], hint: str,
                          trusted_hint: str, refuse_any_pickle: bool) -> None:
    """Raise a clear ``checkpoint`` error unless ``folder`` is safe to load.

    ``what`` names the folder in messages ("The checkpoint", "The text-to-image model").
    ``refuse_any_pickle``: refuse a folder with any pickled file even beside safetensors (our own
    checkpoints never have one); otherwise pickles are tolerated when safetensors are there too
    (hub releases often ship both, and only the safetensors are loaded)."""
    def bad(message: str, fix: str = hint) -> MVDPPError:
        return MVDPPError(errors.CHECKPOINT, message, fix)

    if not folder.exists():
        raise bad(f"{what} {folder} does not exist.")
    if not folder.is_dir():
        raise bad(f"{what} {folder} is not a folder.")
    index_path = folder / "model_index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise bad(f"{folder} is not a pipeline folder (model_index.json is missing).") from None
    except (OSError, ValueError) as exc:
        raise bad(f"{index_path} cannot be read ({exc}).") from exc
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        library = str(value[0])
        if library.split(".")[0] not in allowed_libraries:
            raise bad(f"{index_path} asks to load component {name!r} from {library!r}, which MVD++ does not trust.", trusted_hint)
    files = [p for p in folder.rglob("*") if p.is_file()]
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    has_safetensors = any(p.suffix == ".safetensors" for p in files)
    convert = "Use a safetensors release, or convert the weights with save_pretrained(..., safe_serialization=True)."
    if not has_safetensors:
        detail = f" (only pickled weights such as {pickles[0].name})" if pickles else ""
        raise bad(f"{what} {folder} holds no .safetensors weights{detail}; only safetensors are loaded.", convert)
    if pickles and refuse_any_pickle:
        raise bad(f"{what} {folder} contains pickled weights ({pickles[0].name}); only safetensors are loaded.", convert)
