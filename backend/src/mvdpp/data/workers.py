"""DataLoaders whose worker processes render: spawned, one CPU thread each.

* Spawned, not forked: a forked child of a process that already used OpenGL can hang when it
  makes its own context (``mvdpp.data.render``).
* One thread each: the workers are already one per core, but numpy's OpenBLAS (and any OpenMP
  pool) starts a thread per core in every one of them, and those threads spin between calls.
  On the H100 machine's 16 cores, 6 render workers so left halved the training step beside
  them and 15 stalled it, while 15 single-threaded processes cost it nothing (BENCHMARKS.md,
  "Training throughput", sessions 11-12). The mesh generation gains nothing from the extra
  threads (same wall time with one: its arrays are small).

The thread limits are set in the environment the workers are spawned with (the libraries read
it when they load), never in the calling process, whose own pools are already running.
"""

from __future__ import annotations

import contextlib
import os
import threading

from torch.utils.data import DataLoader

#: Variables the thread pools of numpy's BLAS builds and OpenMP read at load time.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Environment edits are process-wide: one spawn at a time may hold them.
_environment_lock = threading.Lock()


@contextlib.contextmanager
def children_threads(threads: int | None):
    """Processes started inside this block see ``threads`` in THREAD_VARIABLES (None: the
    environment unchanged, i.e. the libraries' defaults). The caller's variables are restored
    on exit."""
    if threads is None:
        yield
        return
    with _environment_lock:
        saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
        os.environ.update({name: str(int(threads)) for name in THREAD_VARIABLES})
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class RenderLoader(DataLoader):
    """A DataLoader of whole items (``batch_size=None``) whose workers are spawned with
    ``threads_per_worker`` CPU threads each (None: the libraries' defaults)."""

    def __init__(self, dataset, num_workers: int = 0, threads_per_worker: int | None = 1, **kwargs):
        if num_workers > 0:
            kwargs.setdefault("multiprocessing_context", "spawn")
        super().__init__(dataset, batch_size=None, num_workers=num_workers, **kwargs)
        self.threads_per_worker = threads_per_worker

    def __iter__(self):
        # The workers start here (on the first call only, with persistent workers).
        with children_threads(self.threads_per_worker if self.num_workers > 0 else None):
            return super().__iter__()
