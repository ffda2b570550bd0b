"""Progress bookkeeping shared by the server (progress events) and the command line (a bar).

Standard library only. A job reports ``(stage, step, total)``; this turns that into seconds
elapsed since the job started and an estimate of the seconds left in the current stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class ProgressUpdate:
    stage: str
    step: int
    total: int
    elapsed_s: float  # since the job started
    eta_s: float | None  # seconds left in this stage; None until a step has been timed

    def as_event_fields(self) -> dict:
        return {
            "stage": self.stage,
            "step": self.step,
            "total": self.total,
            "elapsed_s": round(self.elapsed_s, 3),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 3),
        }


class ProgressClock:
    """Times a job's stages; ``update`` returns what to report for one step."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self.started = clock()
        self._stage: str | None = None
        self._stage_started = self.started
        self._first_step_at: float | None = None
        self._first_step: int = 0
        self._last_report = self.started
        #: seconds spent in each finished or current stage, in order (meta.json "timings")
        self.stage_seconds: dict[str, float] = {}

    def update(self, stage: str, step: int, total: int) -> ProgressUpdate:
        now = self._clock()
        if stage != self._stage:
            self._stage = stage
            # A stage's start counts from when the previous one last reported, so that work
            # between two reports is charged to the stage that follows it.
            self._stage_started = self._last_report
            self._first_step_at = None
        if self._first_step_at is None and step > 0:
            # Rate from the first reported step on: the first step often includes warm-up.
            self._first_step_at, self._first_step = now, step
        self.stage_seconds[stage] = now - self._stage_started
        self._last_report = now
        eta = None
        if self._first_step_at is not None and step > self._first_step and total >= step:
            per_step = (now - self._first_step_at) / (step - self._first_step)
            eta = per_step * (total - step)
        elif total > 0 and step >= total:
            eta = 0.0
        return ProgressUpdate(stage, step, total, now - self.started, eta)

    def elapsed(self) -> float:
        return self._clock() - self.started
