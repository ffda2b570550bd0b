"""Training data kept on the device: objects rendered once, batches drawn from them on the GPU.

Making an object (procedural geometry on the CPU, then rendering) costs far more than the GPU
time one object takes in a training step, so the live stream can starve the GPU. The cache
renders ``objects`` objects per process once per *epoch* of ``refresh_steps`` steps (all 32 rig
views and 10 condition views each, uint8, in device memory) and draws every batch from them
there: which objects, how many condition views, which 8 of the 32 rig views. Each object is thus
seen several times per epoch with different views and conditions, and new objects arrive every
epoch.

Same distribution as ``MultiViewStream``: cameras come from the stream's own ``object_cameras``
(the first condition view defines azimuth 0; the other condition views are i.i.d., so taking
the first Nc of the 10 is a draw of Nc views), objects from its sources, lighting from
``Lighting.random``. Deterministic in (seed, rank, epoch) for the objects and (seed, global
batch index) for the draws, so a resumed run trains on the same objects and views as an
uninterrupted one; processes render disjoint objects. With worker processes the next epoch is
rendered in the background while the current one trains (``_Prefetch``); with a VAE
(``cache-latents``) it is also encoded there, into a second set of device tensors that is
swapped in when the epoch ends, so an epoch switch no longer stops training for the encoding
(about 23 s per 2,048 objects on the H100).

``render_contexts``: with "per-worker" every worker makes its objects and renders them in a GL
context of its own; on the H100 the training step lost 0%, 14% and 35% beside 1, 3 and 6 such
contexts, more than the objects they rendered would explain (BENCHMARKS.md, session 12). With
"one" the workers only make the meshes and one process renders them all in a single context
(``OneContextRenders``); the objects, views and order are the same.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import numpy as np
import torch

from ..rig import MAX_CONDITION_VIEWS, NUM_RIG_VIEWS

_CACHE_SALT = 0x63616368
VIEWS_KEPT = 8
#: Objects put on the device (and through the VAE) per call when a cache epoch is filled.
STORE_CHUNK = 16
#: Views per VAE encoder call when filling the cache. With encode_rgba's default (16) an epoch of
#: 2,048 objects is about 5,400 small encoder calls, part of the 33 s an epoch switch spent
#: after its renders were ready on the H100 (session 4; the rest is copying ~22 GB of uint8 views
#: to the device). 128 views at 256 px are about 0.3 GB per bf16 activation map.
ENCODE_CHUNK = 128


RENDER_CONTEXTS = ("per-worker", "one")
#: Rendered objects waiting between the one-context render process and the cache (~11 MB each
#: at 256 px): enough to ride out a slow step, little memory.
ONE_CONTEXT_QUEUE = 32


def _object_to_render(stream, index: int):
    """(mesh, its 10 condition + 32 rig cameras, lighting, object seed) of object ``index``."""
    from ..data.render import Lighting
    from ..data.stream import object_cameras

    mesh, object_seed = stream.source.get(index)
    rng = np.random.default_rng([stream.seed, index, _CACHE_SALT])
    condition, rig, _ = object_cameras(rng, MAX_CONDITION_VIEWS, NUM_RIG_VIEWS)  # rig ids sorted: 0..31
    return mesh, condition + rig, Lighting.random(rng), int(object_seed)


def _positions(count: int):
    """This DataLoader worker's share of ``count`` positions (all of them outside a worker)."""
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return range(worker, count, workers)


def _split(position: int, images: np.ndarray, object_seed: int) -> tuple:
    return position, torch.from_numpy(images[MAX_CONDITION_VIEWS:]), torch.from_numpy(images[:MAX_CONDITION_VIEWS]), object_seed


class ObjectRenders(torch.utils.data.IterableDataset):
    """(position, rig views (32, H, W, 4), condition views (10, H, W, 4), object seed) per object
    of ``indices``; DataLoader workers split the positions."""

    def __init__(self, stream, indices: list[int]):
        self.stream, self.indices = stream, indices

    def __iter__(self):
        for position in _positions(len(self.indices)):
            mesh, cameras, lighting, object_seed = _object_to_render(self.stream, self.indices[position])
            yield _split(position, self.stream.renderer.render(mesh, cameras, lighting=lighting), object_seed)


class ObjectMeshes(torch.utils.data.IterableDataset):
    """What ObjectRenders renders, without rendering it (no GL): (position, the mesh's drawable
    parts, cameras, lighting, object seed) per object of ``indices``. An MVDPPError ends the
    worker's share with (-1, its fields as a dict): the DataLoader would re-raise it as a
    RuntimeError holding a traceback."""

    def __init__(self, stream, indices: list[int]):
        self.stream, self.indices = stream, indices

    def __iter__(self):
        from ..data.render import mesh_parts
        from ..errors import MVDPPError

        for position in _positions(len(self.indices)):
            try:
                mesh, cameras, lighting, object_seed = _object_to_render(self.stream, self.indices[position])
                parts = mesh_parts(mesh, self.stream.renderer.crease_deg)
            except MVDPPError as exc:
                yield -1, _error_fields(exc)
                return
            yield position, parts, cameras, lighting, object_seed


def _as_is(item):
    return item


def _error_fields(exc) -> dict:
    """An exception as MVDPPError's fields, which cross processes as plain data."""
    from ..errors import INTERNAL, MVDPPError

    if isinstance(exc, MVDPPError):
        return {"code": exc.code, "message": exc.message, "hint": exc.hint}
    return {"code": INTERNAL, "message": f"{type(exc).__name__}: {exc}",
            "hint": "--cache-render-contexts per-worker renders without the render process"}


def _put(results, item, stop) -> bool:
    """Put ``item`` unless ``stop`` is set while the queue stays full."""
    while True:
        try:
            results.put(item, timeout=1.0)
            return True
        except queue.Full:
            if stop.is_set():
                return False


def _render_in_one_context(stream, indices: list[int], workers: int, results, stop) -> None:
    """The one-context render process: ``workers`` CPU-only processes make the meshes, this one
    renders them; each object goes on ``results`` as ObjectRenders yields it, then None (or the
    error as a dict of MVDPPError's fields: exceptions may not unpickle in the reader)."""
    try:
        loader = torch.utils.data.DataLoader(ObjectMeshes(stream, indices), batch_size=None, num_workers=workers,
                                             multiprocessing_context="spawn", collate_fn=_as_is)
        for position, *made in loader:
            if position < 0:  # the mesh worker's error
                _put(results, made[0], stop)
                return
            parts, cameras, lighting, object_seed = made
            if stop.is_set() or not _put(results, _split(position, stream.renderer.render(parts, cameras, lighting=lighting),
                                                         object_seed), stop):
                return
        _put(results, None, stop)
    except BaseException as exc:  # noqa: BLE001 - reported by the reader
        _put(results, _error_fields(exc), stop)
    finally:
        if stop.is_set():  # the reader has gone: exit without flushing the queue to it
            results.cancel_join_thread()


class OneContextRenders:
    """Iterable like a DataLoader over ObjectRenders (same items, same order), rendered by one
    process in one GL context from meshes that ``workers`` processes make. Leaving the loop
    early (or an error) stops that process."""

    def __init__(self, stream, indices: list[int], workers: int):
        self.stream, self.indices, self.workers = stream, indices, max(1, int(workers))

    def __iter__(self):
        from ..errors import INTERNAL, MVDPPError

        context = torch.multiprocessing.get_context("spawn")
        results, stop = context.Queue(maxsize=ONE_CONTEXT_QUEUE), context.Event()
        # not a daemon: a daemon process may not start the loader's worker processes
        process = context.Process(target=_render_in_one_context, args=(self.stream, self.indices, self.workers, results, stop),
                                  name="object-cache-renderer")
        process.start()
        try:
            while True:
                try:
                    item = results.get(timeout=5.0)
                except queue.Empty:
                    if not process.is_alive() and results.empty():
                        raise MVDPPError(INTERNAL, f"the object cache's render process ended early (exit code {process.exitcode})",
                                         "see its output above; --cache-render-contexts per-worker renders without it") from None
                    continue
                if item is None:
                    return
                if isinstance(item, dict):
                    raise MVDPPError(item["code"], f"the object cache's render process stopped: {item['message']}", item["hint"])
                yield item
        finally:
            stop.set()
            deadline = time.monotonic() + 30.0
            while process.is_alive() and time.monotonic() < deadline:
                try:  # drain: a process whose queue holds unread objects cannot exit
                    results.get(timeout=0.5)
                except queue.Empty:
                    pass
            if process.is_alive():
                process.terminate()
            process.join(10)


class DeviceObjectCache:
    """``vae=None``: rendered RGBA views (any stage). With the frozen ``vae`` of a UNet stage the
    rig views are kept only as latents (posterior mean, ``mvdpp.models.encode_rgba``: what the
    UNet objective would compute every step) and the condition views as images plus latents, so
    a step needs no VAE at all: about a quarter of the memory per object and, for the embedded
    preset, more than half of the step's FLOPs gone."""

    def __init__(self, objects: int, refresh_steps: int, resolution: int, seed: int, rank: int, world_size: int,
                 device: torch.device, num_workers: int = 0, assets: str | None = None, log=print, vae=None,
                 prefetch: bool = True, background_encode: bool = True, render_contexts: str = "per-worker"):
        from ..data.stream import MultiViewStream
        from ..errors import BAD_INPUT, MVDPPError

        if render_contexts not in RENDER_CONTEXTS:
            raise MVDPPError(BAD_INPUT, f"unknown render contexts {render_contexts!r}", f"use one of: {', '.join(RENDER_CONTEXTS)}")
        self.render_contexts = render_contexts

        self.objects, self.refresh_steps = int(objects), max(1, int(refresh_steps))
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.device, self.num_workers, self.log = device, num_workers, log
        self.vae = vae
        # The stream is used for its object source and renderer (made lazily in each worker).
        self.stream = MultiViewStream(batch_size=1, size=resolution, seed=seed, assets=assets, rank=0, world_size=1)
        n, res = self.objects, resolution
        shapes = {"cond": ((n, MAX_CONDITION_VIEWS, res, res, 4), torch.uint8)}
        if vae is None:
            shapes["rig"] = ((n, NUM_RIG_VIEWS, res, res, 4), torch.uint8)
        else:
            factor = 2 ** (len(vae.config.block_out_channels) - 1)
            latent_shape = (vae.config.latent_channels, res // factor, res // factor)
            # fp16 keeps 11 bits of the scaled latents (|z| of a few units): below bf16 autocast noise.
            shapes["rig_latents"] = ((n, NUM_RIG_VIEWS, *latent_shape), torch.float16)
            shapes["cond_latents"] = ((n, MAX_CONDITION_VIEWS, *latent_shape), torch.float16)
        self._shapes = shapes
        self._active = self._new_storage()
        self._spare: dict | None = None  # the set a background encoding writes (made when first needed)
        self.object_seed = torch.empty(self.objects, dtype=torch.int64)
        self.epoch = None
        # Background rendering of the next epoch needs worker processes: rendering in a thread of
        # this process would share its GL context across threads.
        self.prefetch = bool(prefetch) and self.num_workers > 0
        # Encoding in the background needs a second set of device tensors: about 3 MB per object
        # with a VAE (6 GB for 2,048 objects at 256 px) but 14 MB of rig images without one, so
        # only with a VAE.
        self.encodes_in_background = self.prefetch and vae is not None and background_encode
        self._pending: _Prefetch | None = None

    def _new_storage(self) -> dict:
        return {name: torch.empty(shape, dtype=dtype, device=self.device) for name, (shape, dtype) in self._shapes.items()}

    # The set the current epoch's batches are drawn from.
    cond = property(lambda self: self._active["cond"])
    rig = property(lambda self: self._active["rig"])
    rig_latents = property(lambda self: self._active["rig_latents"])
    cond_latents = property(lambda self: self._active["cond_latents"])

    @torch.no_grad()
    def _encode(self, images_uint8: torch.Tensor) -> torch.Tensor:
        from ..models import encode_rgba

        images = images_uint8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return encode_rgba(self.vae, images, chunk_size=ENCODE_CHUNK).to(torch.float16)

    def _loader(self, epoch: int):
        first = (epoch * self.world_size + self.rank) * self.objects
        indices = list(range(first, first + self.objects))
        if self.render_contexts == "one" and self.num_workers > 0:
            return OneContextRenders(self.stream, indices, self.num_workers)
        dataset = ObjectRenders(self.stream, indices)
        # Spawned workers, as the stream's own loader does: a forked child of a process that used
        # OpenGL can hang when it makes its own context.
        extra = {"multiprocessing_context": "spawn"} if self.num_workers > 0 else {}
        return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                                           pin_memory=self.device.type == "cuda" and not self.prefetch, **extra)

    def _store(self, where: slice | torch.Tensor, rig: torch.Tensor, cond: torch.Tensor, seeds: torch.Tensor,
               storage: dict | None = None) -> None:
        """Objects ``where`` (a slice or a tensor of positions) of the device cache from host
        tensors (N, V, H, W, 4) uint8, into ``storage`` (default: the active set, whose object
        seeds are then set too)."""
        target = self._active if storage is None else storage
        index = where if isinstance(where, slice) else where.to(self.device)
        target["cond"][index] = cond.to(self.device, non_blocking=True)
        if self.vae is None:
            target["rig"][index] = rig.to(self.device, non_blocking=True)
        else:
            count = rig.shape[0]
            target["rig_latents"][index] = self._encode(rig.flatten(0, 1)).unflatten(0, (count, NUM_RIG_VIEWS))
            target["cond_latents"][index] = self._encode(cond.flatten(0, 1)).unflatten(0, (count, MAX_CONDITION_VIEWS))
        if storage is None:
            self.object_seed[where] = seeds

    def store_all(self, host: dict, storage: dict | None = None, stop: threading.Event | None = None) -> bool:
        """A whole epoch from ``render_to_host``'s dict, STORE_CHUNK objects per call (the VAE
        encodes hundreds of views at once). False when ``stop`` was set before the end."""
        for i in range(0, self.objects, STORE_CHUNK):
            if stop is not None and stop.is_set():
                return False
            where = slice(i, min(i + STORE_CHUNK, self.objects))
            self._store(where, host["rig"][where], host["cond"][where], host["seeds"][where], storage=storage)
        return True

    def render_to_host(self, epoch: int, stop: threading.Event | None = None) -> dict | None:
        """All objects of ``epoch`` in host memory (what a prefetch makes while training goes on)."""
        res = self.cond.shape[-2]
        host = {"rig": torch.empty((self.objects, NUM_RIG_VIEWS, res, res, 4), dtype=torch.uint8),
                "cond": torch.empty((self.objects, MAX_CONDITION_VIEWS, res, res, 4), dtype=torch.uint8),
                "seeds": torch.empty(self.objects, dtype=torch.int64)}
        for position, rig, cond, object_seed in self._loader(epoch):
            if stop is not None and stop.is_set():
                return None
            host["rig"][position], host["cond"][position], host["seeds"][position] = rig, cond, object_seed
        return host

    def fill(self, epoch: int) -> None:
        """Put this process's objects of ``epoch`` (disjoint across processes and epochs) on the
        device: from the prefetch made during the previous epoch if there is one, else rendered
        now. Then start rendering the next epoch's objects in the background (DataLoader worker
        processes render; a thread only collects their output in host memory)."""
        start = time.monotonic()
        pending, self._pending = self._pending, None
        encoded = "" if self.vae is None else " and encoded"
        if pending is not None and pending.epoch == epoch:
            host = pending.result()
            waited = time.monotonic() - start
            if pending.storage is not None:  # encoded into the spare set already: swap the sets
                pending.wait_on_device()
                self._active, self._spare = pending.storage, self._active
                self.object_seed[:] = host["seeds"]
                how = f"prefetched{encoded} in the background (waited {waited:.1f} s for them), swapped in:"
            else:
                self.store_all(host)
                how = f"prefetched (waited {waited:.1f} s for its rendering){encoded}"
        else:
            if pending is not None:
                pending.cancel()
            self._render_and_store(epoch)
            how = f"rendered{encoded}"
        self.epoch = epoch
        self.log(f"object cache: {how} {self.objects} objects (epoch {epoch}) in {time.monotonic() - start:.1f} s")
        if self.prefetch:
            storage = None
            if self.encodes_in_background:
                if self._spare is None:
                    self._spare = self._new_storage()
                storage = self._spare
            self._pending = _Prefetch(self, epoch + 1, storage)

    def _render_and_store(self, epoch: int) -> None:
        """Render ``epoch`` now, storing objects STORE_CHUNK at a time (the VAE encodes hundreds
        of views per call instead of one object's 42). Workers deliver objects out of order, so
        a chunk is whatever arrived, each object stored at its own position."""
        arrived: list[tuple[int, torch.Tensor, torch.Tensor, int]] = []

        def flush():
            positions = torch.tensor([p for p, _, _, _ in arrived])
            rig = torch.stack([r for _, r, _, _ in arrived])
            cond = torch.stack([c for _, _, c, _ in arrived])
            seeds = torch.tensor([o for _, _, _, o in arrived])
            self._store(positions, rig, cond, seeds)
            arrived.clear()

        for item in self._loader(epoch):
            arrived.append(item)
            if len(arrived) == STORE_CHUNK:
                flush()
        if arrived:
            flush()

    def close(self) -> None:
        """Stop a background prefetch (at the end of a run)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def batch(self, global_index: int, batch_size: int, condition_mode: str) -> dict:
        from ..data.stream import draw_condition_count

        epoch = (global_index // self.world_size) // self.refresh_steps
        if epoch != self.epoch:
            self.fill(epoch)
        rng = np.random.default_rng([self.seed, global_index, _CACHE_SALT])
        num_cond = draw_condition_count(condition_mode, rng)
        picks = rng.choice(self.objects, size=batch_size, replace=batch_size > self.objects)
        views = np.sort(np.stack([rng.choice(NUM_RIG_VIEWS, size=VIEWS_KEPT, replace=False) for _ in range(batch_size)]), axis=1)
        picks_d = torch.from_numpy(picks).to(self.device, non_blocking=True)
        views_d = torch.from_numpy(views).to(self.device, non_blocking=True)
        cond = self.cond[picks_d, :num_cond]
        batch = {
            "cond": cond.permute(0, 1, 4, 2, 3).float().div_(127.5).sub_(1.0),
            "gen_view_ids": torch.from_numpy(views),
            "object_seed": self.object_seed[torch.from_numpy(picks)],
        }
        if self.vae is None:
            gen = self.rig[picks_d[:, None], views_d]  # (B, 8, H, W, 4) gathered on the device
            batch["gen"] = gen.permute(0, 1, 4, 2, 3).float().div_(127.5).sub_(1.0)
        else:
            batch["gen_latents"] = self.rig_latents[picks_d[:, None], views_d].float()
            batch["cond_latents"] = self.cond_latents[picks_d, :num_cond].float()
        return batch


def next_epoch_start(global_index: int, refresh_steps: int, world_size: int = 1) -> int:
    """The first global batch index of the cache epoch at or after ``global_index``.

    A run continued from an export renders its first epoch from scratch (about 80 s for 2,048
    objects on the H100) whatever part of it is left; starting at the next epoch's first batch
    uses all of that epoch instead of, say, its last 10 steps (session 11)."""
    span = max(1, int(refresh_steps)) * max(1, int(world_size))
    return -(-int(global_index) // span) * span


class _Prefetch:
    """One epoch's objects rendered into host memory by a background thread and, given
    ``storage`` (the cache's spare set of device tensors), stored and encoded there too.

    On CUDA that work runs on a stream of its own. It first waits for what the training stream
    had queued when the prefetch began (the spare set held the previous epoch, which steps
    already queued may still read); ``wait_on_device`` makes the training stream wait for the
    encoding before the sets are swapped."""

    def __init__(self, cache: DeviceObjectCache, epoch: int, storage: dict | None = None):
        self.epoch, self.storage, self.device = epoch, storage, cache.device
        self.stop = threading.Event()
        self.value = None
        self.error: BaseException | None = None
        self._stream = self._released = self._encoded = None
        if storage is not None and cache.device.type == "cuda":
            self._stream = torch.cuda.Stream(device=cache.device)
            self._released = torch.cuda.Event()
            self._released.record(torch.cuda.current_stream(cache.device))
        self.thread = threading.Thread(target=self._run, args=(cache,), name=f"object-cache-epoch-{epoch}", daemon=True)
        self.thread.start()

    def _run(self, cache: DeviceObjectCache) -> None:
        try:
            host = cache.render_to_host(self.epoch, self.stop)
            if host is not None and self.storage is not None:
                if self._stream is None:
                    stored = cache.store_all(host, self.storage, self.stop)
                else:
                    with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
                        self._stream.wait_event(self._released)
                        stored = cache.store_all(host, self.storage, self.stop)
                        self._encoded = torch.cuda.Event()
                        self._encoded.record(self._stream)
                # The views are on the device now; keep only the seeds in host memory.
                host = {"seeds": host["seeds"]} if stored else None
            self.value = host
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread in result()
            self.error = exc

    def wait_on_device(self) -> None:
        """Make the training stream wait for the background encoding (after ``result``)."""
        if self._encoded is not None:
            torch.cuda.current_stream(self.device).wait_event(self._encoded)

    def result(self) -> dict:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value

    def cancel(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self.thread.join(timeout)  # a daemon thread: if its workers are still starting, leave it


def cache_batches(cache: DeviceObjectCache, batch_size: int, condition_mode: str, start: int) -> Iterator[dict]:
    """This process's batches: global indices start + rank, start + rank + world_size, ..."""
    index = start + cache.rank
    try:
        while True:
            yield cache.batch(index, batch_size, condition_mode)
            index += cache.world_size
    finally:
        cache.close()
