"""The layout of a training run folder (torch-free).

    RUN/
      settings.json                  the TrainSettings of the run's latest invocation
      log.jsonl                      one JSON object per line: kind "train" (loss, lr, samples/s),
                                     "sample", "checkpoint", "stop"
      samples/step-000500.png        sample sheets (condition | generated | ground truth)
      checkpoints/step-000500/       accelerate state: trained weights, optimizer, LR schedule,
                                     EMA, every process's RNG state
        training_state.json          step, data position, warm-up origin, samples seen
        pipeline/                    the full pipeline with the EMA weights (fp32): what
                                     --init-from and --export read

The checkpoint folder is written under a temporary name and renamed when complete, so a run
stopped mid-save never leaves a half checkpoint that --resume would pick.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import BAD_INPUT, CHECKPOINT, OUTPUT_EXISTS, MVDPPError

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "training_state.json"
PIPELINE_DIR = "pipeline"


@dataclass
class TrainingState:
    stage: str
    step: int = 0
    #: samples (objects) seen over all processes
    samples_seen: int = 0
    #: the step the LR warm-up counts from (a run continued from an export restarts its warm-up
    #: because its optimizer moments start afresh)
    warmup_origin: int = 0
    #: index of the next data batch each process draws (the stream is a function of it)
    data_position: int = 0
    wall_seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, path: Path) -> "TrainingState":
        data = json.loads(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class RunFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def log_path(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    def create(self) -> None:
        for folder in (self.root, self.checkpoints, self.samples):
            folder.mkdir(parents=True, exist_ok=True)

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}"

    def list_checkpoints(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        found = self.list_checkpoints()
        return found[-1] if found else None

    def prune(self, keep: int) -> None:
        """Delete all but the ``keep`` newest checkpoints (0 keeps all)."""
        if keep <= 0:
            return
        for old in self.list_checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def log(self, **record) -> None:
        record.setdefault("time", round(time.time(), 3))
        with self.log_path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def read_log(self, kind: str | None = None) -> list[dict]:
        if not self.log_path.is_file():
            return []
        records = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        return [r for r in records if kind is None or r.get("kind") == kind]


def resolve_pipeline_folder(path: str | Path) -> Path:
    """A pipeline folder from either a pipeline folder or a run folder (its latest checkpoint)."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    if (path / PIPELINE_DIR / "model_index.json").is_file():
        return path / PIPELINE_DIR
    latest = RunFolder(path).latest_checkpoint()
    if latest is not None and (latest / PIPELINE_DIR / "model_index.json").is_file():
        return latest / PIPELINE_DIR
    raise MVDPPError(
        CHECKPOINT if path.exists() else BAD_INPUT,
        f"{path} is neither a pipeline folder nor a training run with a checkpoint.",
        "Give the folder written by --export, a run folder (its latest checkpoint is used) or one of its checkpoints/step-* folders.",
    )


def check_export_target(folder: str | Path) -> None:
    """An export replaces an earlier export, never a folder that holds something else."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / "model_index.json").is_file())):
        raise MVDPPError(OUTPUT_EXISTS, f"--export {folder} exists and is not a pipeline folder; it would be replaced.",
                         "Choose a new folder, or the folder of an earlier export.")
