"""Where a training process gets its batches.

Every source is a function of (seed, process rank, batch index): a run resumed at batch ``k``
sees exactly the batches an uninterrupted run saw from ``k`` on, and every process of a
distributed run sees different objects.

* ``procedural``: ``mvdpp.data.stream.MultiViewStream`` (procedural objects, or the meshes of an
  asset folder, rendered on the fly).
* ``cache``: objects rendered once per epoch into device memory, batches drawn there
  (``object_cache``): no renderer and no host-to-device copy inside the step.
* ``cache-latents`` (UNet stages): the same, with the rig views kept as latents of the frozen
  VAE (batches then carry ``gen_latents`` / ``cond_latents``): no VAE inside the step either.
* ``synthetic``: random tensors of the right shapes made on the device (benchmarks of the model
  alone: no renderer, no host-to-device copies).
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..errors import BAD_INPUT, MVDPPError
from ..rig import MAX_CONDITION_VIEWS, NUM_RIG_VIEWS

VIEWS_KEPT = 8  # view dropout: 8 of the 32 rig views per object per step (PAPER.md)


#: batch entries that stay on the host: rig indices (checked on the host by the shared input
#: code) and object seeds (bookkeeping only)
HOST_KEYS = ("gen_view_ids", "object_seed")


def to_device(batch: dict, device: torch.device) -> dict:
    """Copy a host batch to ``device``; pinned first on CUDA so the copy does not stall the host."""
    pin = device.type == "cuda"

    def move(v):
        return (v.pin_memory() if pin and not v.is_pinned() else v).to(device, non_blocking=True)

    return {k: (move(v) if isinstance(v, torch.Tensor) and k not in HOST_KEYS else v) for k, v in batch.items()}


def synthetic_batches(batch_size: int, resolution: int, condition_mode: str, seed: int, rank: int, start: int,
                      device: torch.device, world_size: int = 1) -> Iterator[dict]:
    """Random RGBA-shaped batches with the stream's layout, made on ``device``: global batch
    indices ``start, start + world_size, ...`` (pass ``start`` = global start + rank)."""
    index = start
    while True:
        gen = torch.Generator(device="cpu").manual_seed(hash((seed, index)) & 0x7FFFFFFF)
        num_cond = _condition_count(condition_mode, gen)
        views = torch.stack([torch.randperm(NUM_RIG_VIEWS, generator=gen)[:VIEWS_KEPT] for _ in range(batch_size)])
        dgen = torch.Generator(device=device).manual_seed(hash((seed, index, 1)) & 0x7FFFFFFF)
        yield {
            "cond": torch.rand(batch_size, num_cond, 4, resolution, resolution, device=device, generator=dgen) * 2 - 1,
            "gen": torch.rand(batch_size, VIEWS_KEPT, 4, resolution, resolution, device=device, generator=dgen) * 2 - 1,
            "gen_view_ids": views,
            "object_seed": torch.arange(batch_size) + index * batch_size,
        }
        index += world_size


def _condition_count(mode: str, gen: torch.Generator) -> int:
    if mode == "single":
        return 1
    sparse = int(torch.randint(2, MAX_CONDITION_VIEWS + 1, (1,), generator=gen))
    if mode == "sparse":
        return sparse
    return 1 if float(torch.rand(1, generator=gen)) < 0.5 else sparse


def procedural_batches(batch_size: int, resolution: int, condition_mode: str, seed: int, rank: int, world_size: int,
                       start: int, num_workers: int = 0, assets: str | None = None) -> Iterator[dict]:
    """This process's batches of ``MultiViewStream``.

    ``start`` is a GLOBAL batch index: process ``rank`` of ``world_size`` makes the batches
    ``start + rank, start + rank + world_size, ...`` (the stream's own sharding), so processes
    never share an object and a run resumed at ``start`` continues where it stopped, on any
    number of processes.
    """
    from ..data.stream import MultiViewStream

    stream = MultiViewStream(batch_size=batch_size, size=resolution, condition_views=condition_mode, seed=seed,
                             assets=assets, start_batch=start, rank=rank, world_size=world_size)
    if num_workers <= 0:
        yield from stream
        return
    # The stream's own loader: spawned workers (a fork of a process that used OpenGL can hang).
    yield from stream.loader(num_workers, pin_memory=torch.cuda.is_available())


def make_batches(kind: str, *, batch_size: int, resolution: int, condition_mode: str, seed: int, rank: int,
                 world_size: int, start: int, device: torch.device, num_workers: int = 0, assets: str | None = None,
                 cache_objects: int = 1024, cache_refresh_steps: int = 500, log=print, vae=None,
                 cache_prefetch: bool = True, cache_background_encode: bool = True,
                 cache_render_contexts: str = "per-worker") -> Iterator[dict]:
    """Batches for process ``rank``; ``start`` is the global batch index to continue from."""
    if kind == "synthetic":
        return synthetic_batches(batch_size, resolution, condition_mode, seed, rank, start + rank, device, world_size)
    if kind == "procedural":
        batches = procedural_batches(batch_size, resolution, condition_mode, seed, rank, world_size, start, num_workers, assets)
        return (to_device(b, device) for b in batches)
    if kind in ("cache", "cache-latents"):
        from .object_cache import DeviceObjectCache, cache_batches

        if kind == "cache-latents" and vae is None:
            raise MVDPPError(BAD_INPUT, "--data cache-latents needs a frozen VAE: it serves the UNet stages only.",
                             "Use --data cache for the vae stage.")
        cache = DeviceObjectCache(cache_objects, cache_refresh_steps, resolution, seed, rank, world_size, device, num_workers,
                                  assets, log, vae=vae if kind == "cache-latents" else None, prefetch=cache_prefetch,
                                  background_encode=cache_background_encode, render_contexts=cache_render_contexts)
        return cache_batches(cache, batch_size, condition_mode, start)
    raise MVDPPError(BAD_INPUT, f"Unknown training data {kind!r}.", "Use --data procedural or cache (or synthetic for benchmarks).")
