"""Load that runs beside the training step in `mvdpp bench train --background-load`.

A real run renders the next object-cache epoch while the current one trains, and on the H100
the steps during that rendering ran at about half speed (session 11). Timing the step under
each kind of load alone says which resource they fight over:

* ``render``: what a cache prefetch does: ``ObjectRenders`` through a DataLoader of N spawned
  workers (each with its own GL context, on the GPU where there is one), the objects gathered
  by a thread of this process and dropped;
* ``render-apart``: the same renderer, its objects gathered by a separate process instead of
  a thread of this one (so only the rendering itself, not the gathering, shares the step's
  process and GIL);
* ``render-one-context``: N spawned processes make the meshes (no GL) and one process renders
  them all in one GL context (``object_cache.OneContextRenders``), gathered by a thread here;
* ``cpu``: N processes spinning on the CPU and nothing else (host contention only).
"""

from __future__ import annotations

import multiprocessing
import threading
import time

KINDS = ("none", "render", "render-apart", "render-one-context", "cpu")
#: Object indices far from any training run's (the objects themselves do not matter).
_FIRST_OBJECT = 10**9


def _spin() -> None:
    while True:
        pass


def _objects(workers: int, resolution: int, seed: int, one_context: bool = False):
    """The prefetch's renderer: rendered objects, one at a time, for ever."""
    import torch

    from ..data.stream import MultiViewStream
    from .object_cache import ObjectRenders, OneContextRenders

    stream = MultiViewStream(batch_size=1, size=resolution, seed=seed, rank=0, world_size=1)
    indices = list(range(_FIRST_OBJECT, _FIRST_OBJECT + 10**7))
    if one_context:
        return OneContextRenders(stream, indices, workers)
    return torch.utils.data.DataLoader(ObjectRenders(stream, indices), batch_size=None, num_workers=workers,
                                       multiprocessing_context="spawn")


def _drain(workers: int, resolution: int, seed: int, count, ready, stop, one_context: bool = False) -> None:
    """Gather (and drop) the renderer's objects until ``stop``: ``ready`` once the first one
    arrived, ``count`` the ones after it. Runs in a thread (``render``, ``render-one-context``)
    or a process (``render-apart``), hence multiprocessing's Value and Events for both."""
    for _ in _objects(workers, resolution, seed, one_context):
        if ready.is_set():
            with count.get_lock():
                count.value += 1
        ready.set()
        if stop.is_set():
            break


def _in_thread(error: list, *args) -> None:
    try:
        _drain(*args)
    except BaseException as exc:  # noqa: BLE001 - reported by wait_ready
        error.append(exc)


class BackgroundLoad:
    def __init__(self, kind: str, workers: int, resolution: int = 256, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f"unknown background load {kind!r}; one of {', '.join(KINDS)}")
        self.kind, self.workers = kind, max(1, int(workers))
        self.resolution, self.seed = resolution, seed
        context = multiprocessing.get_context("spawn")
        self._count, self._first, self._stop = context.Value("q", 0), context.Event(), context.Event()
        self._ready = threading.Event()
        self._runner = None  # the thread or process that gathers the renders
        self._watcher: threading.Thread | None = None
        self._processes: list = []
        self._errors: list = []
        self._counting_since: float | None = None

    def start(self) -> "BackgroundLoad":
        context = multiprocessing.get_context("spawn")
        if self.kind == "cpu":
            self._processes = [context.Process(target=_spin, daemon=True) for _ in range(self.workers)]
            for process in self._processes:
                process.start()
        if not self.kind.startswith("render"):
            self._ready.set()
            return self
        args = (self.workers, self.resolution, self.seed, self._count, self._first, self._stop)
        if self.kind in ("render", "render-one-context"):
            args += (self.kind == "render-one-context",)
            self._runner = threading.Thread(target=_in_thread, args=(self._errors, *args), daemon=True)
        else:  # not a daemon: a daemon process may not start the loader's worker processes
            self._runner = context.Process(target=_drain, args=args)
            self._processes = [self._runner]
        self._runner.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        """Ready once the first object arrived (or the gatherer died: wait_ready reports it)."""
        while not self._first.wait(1.0):
            if not self._runner.is_alive():
                break
        self._counting_since = time.perf_counter()
        self._ready.set()

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until the load runs (the render workers delivered their first object)."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the background {self.kind} load did not start within {timeout:.0f} s")
        if self._runner is not None and not self._first.is_set():
            cause = self._errors[0] if self._errors else f"exit code {getattr(self._runner, 'exitcode', None)}"
            raise RuntimeError(f"the background {self.kind} load failed: {cause}")

    def objects_per_second(self) -> float | None:
        if self._runner is None or self._counting_since is None:
            return None
        return self._count.value / max(1e-9, time.perf_counter() - self._counting_since)

    def stop(self) -> None:
        """End the load: a gatherer stops after its next object and shuts its loader's workers
        down; whatever is still running after that is terminated."""
        self._stop.set()
        if self._runner is not None:
            self._runner.join(60)
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join(10)
