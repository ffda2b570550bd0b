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
batch index) for the draws, so a resumed run repeats an uninterrupted one; processes render
disjoint objects.
"""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch

from ..rig import MAX_CONDITION_VIEWS, NUM_RIG_VIEWS

_CACHE_SALT = 0x63616368
VIEWS_KEPT = 8


class ObjectRenders(torch.utils.data.IterableDataset):
    """(position, rig views (32, H, W, 4), condition views (10, H, W, 4), object seed) per object
    of ``indices``; DataLoader workers split the positions."""

    def __init__(self, stream, indices: list[int]):
        self.stream, self.indices = stream, indices

    def __iter__(self):
        from ..data.render import Lighting
        from ..data.stream import object_cameras

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for position in range(worker, len(self.indices), workers):
            index = self.indices[position]
            mesh, object_seed = self.stream.source.get(index)
            rng = np.random.default_rng([self.stream.seed, index, _CACHE_SALT])
            condition, rig, _ = object_cameras(rng, MAX_CONDITION_VIEWS, NUM_RIG_VIEWS)  # rig ids sorted: 0..31
            images = self.stream.renderer.render(mesh, condition + rig, lighting=Lighting.random(rng))
            yield position, torch.from_numpy(images[MAX_CONDITION_VIEWS:]), torch.from_numpy(images[:MAX_CONDITION_VIEWS]), int(object_seed)


class DeviceObjectCache:
    """``vae=None``: rendered RGBA views (any stage). With the frozen ``vae`` of a UNet stage the
    rig views are kept only as latents (posterior mean, ``mvdpp.models.encode_rgba``: what the
    UNet objective would compute every step) and the condition views as images plus latents, so
    a step needs no VAE at all: about a quarter of the memory per object and, for the embedded
    preset, more than half of the step's FLOPs gone."""

    def __init__(self, objects: int, refresh_steps: int, resolution: int, seed: int, rank: int, world_size: int,
                 device: torch.device, num_workers: int = 0, assets: str | None = None, log=print, vae=None):
        from ..data.stream import MultiViewStream

        self.objects, self.refresh_steps = int(objects), max(1, int(refresh_steps))
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.device, self.num_workers, self.log = device, num_workers, log
        self.vae = vae
        # The stream is used for its object source and renderer (made lazily in each worker).
        self.stream = MultiViewStream(batch_size=1, size=resolution, seed=seed, assets=assets, rank=0, world_size=1)
        n, res = self.objects, resolution
        self.cond = torch.empty((n, MAX_CONDITION_VIEWS, res, res, 4), dtype=torch.uint8, device=device)
        if vae is None:
            self.rig = torch.empty((n, NUM_RIG_VIEWS, res, res, 4), dtype=torch.uint8, device=device)
        else:
            factor = 2 ** (len(vae.config.block_out_channels) - 1)
            latent_shape = (vae.config.latent_channels, res // factor, res // factor)
            # fp16 keeps 11 bits of the scaled latents (|z| of a few units): below bf16 autocast noise.
            self.rig_latents = torch.empty((n, NUM_RIG_VIEWS, *latent_shape), dtype=torch.float16, device=device)
            self.cond_latents = torch.empty((n, MAX_CONDITION_VIEWS, *latent_shape), dtype=torch.float16, device=device)
        self.object_seed = torch.empty(self.objects, dtype=torch.int64)
        self.epoch = None

    @torch.no_grad()
    def _encode(self, images_uint8: torch.Tensor) -> torch.Tensor:
        from ..models import encode_rgba

        images = images_uint8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return encode_rgba(self.vae, images).to(torch.float16)

    def fill(self, epoch: int) -> None:
        """Render this process's objects of ``epoch`` (disjoint across processes and epochs)."""
        first = (epoch * self.world_size + self.rank) * self.objects
        dataset = ObjectRenders(self.stream, list(range(first, first + self.objects)))
        # Spawned workers, as the stream's own loader does: a forked child of a process that used
        # OpenGL can hang when it makes its own context.
        extra = {"multiprocessing_context": "spawn"} if self.num_workers > 0 else {}
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                                             pin_memory=self.device.type == "cuda", **extra)
        start = time.monotonic()
        for position, rig, cond, object_seed in loader:
            self.cond[position].copy_(cond, non_blocking=True)
            if self.vae is None:
                self.rig[position].copy_(rig, non_blocking=True)
            else:
                self.rig_latents[position] = self._encode(rig)
                self.cond_latents[position] = self._encode(cond)
            self.object_seed[position] = object_seed
        self.epoch = epoch
        kind = "rendered" if self.vae is None else "rendered and encoded"
        self.log(f"object cache: {kind} {self.objects} objects (epoch {epoch}) in {time.monotonic() - start:.1f} s")

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


def cache_batches(cache: DeviceObjectCache, batch_size: int, condition_mode: str, start: int) -> Iterator[dict]:
    """This process's batches: global indices start + rank, start + rank + world_size, ..."""
    index = start + cache.rank
    while True:
        yield cache.batch(index, batch_size, condition_mode)
        index += cache.world_size
