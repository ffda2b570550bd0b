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
* ``cpu``: N processes spinning on the CPU and nothing else (host contention only).
"""

from __future__ import annotations

import multiprocessing
import threading
import time

KINDS = ("none", "render", "render-apart", "cpu")
#: Object indices far from any training run's (the objects themselves do not matter).
_FIRST_OBJECT = 10**9


def _spin() -> None:
    while True:
        pass


def _objects(workers: int, resolution: int, seed: int):
    """The prefetch's renderer: rendered objects, one at a time, for ever."""
    import torch

    from ..data.stream import MultiViewStream
    from .object_cache import ObjectRenders

    stream = MultiViewStream(batch_size=1, size=resolution, seed=seed, rank=0, world_size=1)
    dataset = ObjectRenders(stream, list(range(_FIRST_OBJECT, _FIRST_OBJECT + 10**7)))
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, multiprocessing_context="spawn")


def _gather_apart(workers: int, resolution: int, seed: int, count, ready, stop) -> None:
    """``render-apart``: gather (and drop) the renders in this separate process."""
    for _ in _objects(workers, resolution, seed):
        if ready.is_set():
            with count.get_lock():
                count.value += 1
        ready.set()
        if stop.is_set():
            break


class BackgroundLoad:
    def __init__(self, kind: str, workers: int, resolution: int = 256, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f"unknown background load {kind!r}; one of {', '.join(KINDS)}")
        self.kind, self.workers = kind, max(1, int(workers))
        self.resolution, self.seed = resolution, seed
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._processes: list = []
        self.error: BaseException | None = None
        self.objects = 0
        self._counting_since: float | None = None

    def start(self) -> "BackgroundLoad":
        if self.kind == "cpu":
            context = multiprocessing.get_context("spawn")
            self._processes = [context.Process(target=_spin, daemon=True) for _ in range(self.workers)]
            for process in self._processes:
                process.start()
            self._ready.set()
        elif self.kind == "render":
            self._thread = threading.Thread(target=self._render, name="bench-background-render", daemon=True)
            self._thread.start()
        elif self.kind == "render-apart":
            self._start_apart()
        else:
            self._ready.set()
        return self

    def _render(self) -> None:
        try:
            for _ in _objects(self.workers, self.resolution, self.seed):
                if not self._ready.is_set():
                    self._counting_since = time.perf_counter()
                    self._ready.set()
                else:
                    self.objects += 1
                if self._stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by wait_ready / stop
            self.error = exc
            self._ready.set()

    def _start_apart(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._count, ready, self._apart_stop = context.Value("q", 0), context.Event(), context.Event()
        process = context.Process(target=_gather_apart, args=(self.workers, self.resolution, self.seed, self._count, ready,
                                                              self._apart_stop), daemon=False)
        process.start()
        self._processes = [process]

        def wait() -> None:  # mirror the other kinds: ready once the first object arrived
            while not ready.wait(1.0):
                if not process.is_alive():
                    self.error = RuntimeError(f"the render process exited with code {process.exitcode}")
                    break
            self._counting_since = time.perf_counter()
            self._ready.set()

        self._thread = threading.Thread(target=wait, daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until the load runs (the render workers delivered their first object)."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the background {self.kind} load did not start within {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"the background {self.kind} load failed: {self.error}") from self.error

    def objects_per_second(self) -> float | None:
        if not self.kind.startswith("render") or self._counting_since is None:
            return None
        objects = self._count.value if self.kind == "render-apart" else self.objects
        return objects / max(1e-9, time.perf_counter() - self._counting_since)

    def stop(self) -> None:
        self._stop.set()
        if self.kind == "render-apart":
            # Let the gathering process shut its loader down (its workers with it); terminate it
            # only if it does not stop in time.
            self._apart_stop.set()
            for process in self._processes:
                process.join(60)
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(10)
        if self._thread is not None:
            self._thread.join(60)  # the loader stops after its next object and shuts its workers down
