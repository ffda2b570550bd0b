"""The training stream: whole batches of rendered multi-view samples (docs/architecture.md).

``MultiViewStream`` is a torch IterableDataset; each item is a WHOLE batch (use it with
``DataLoader(stream, batch_size=None, num_workers=W)``)::

    {"cond": float32 (B, Nc, 4, H, W) in [-1, 1],  # condition views, the first at azimuth 0
     "gen": float32 (B, 8, 4, H, W) in [-1, 1],    # 8 of the 32 rig views (view dropout)
     "gen_view_ids": int64 (B, 8),                 # their rig indices, ascending
     "object_seed": int64 (B,)}                    # procedural seed (or asset file index)

Per object: the first condition camera comes from ``mvdpp.rig.sample_input_camera`` (a rig
azimuth, random elevation and distance) and defines azimuth 0 of the rig; the other condition
cameras are sampled the same way relative to it. Instead of rotating the mesh by minus the
first azimuth, every camera is rotated by plus it: the images are the same (lighting is random
per object anyway) and no mesh is copied. Rig views are then rig poses relative to the first
condition view, as at inference.

Nc is drawn per batch (all objects of a batch share it, so tensors stack): "single" -> 1,
"sparse" -> uniform in 2..10, "mixed" -> single or sparse with probability 1/2, or a fixed int.

Sharding: batch ``b`` holds objects ``b*B .. b*B+B-1`` and everything random in it comes from
``(seed, b)``; process ``rank`` of ``world_size`` (arguments, else env RANK / WORLD_SIZE as set by
torchrun and accelerate) with DataLoader worker ``w`` of ``W`` makes the batches with
``b % (world_size*W) == rank*W + w``. So no object repeats across workers or ranks, and a run is
reproducible from its seed for a given world size and worker count (the DataLoader interleaves
its workers in order, so a single process sees b = start_batch, start_batch+1, ...).
Each worker makes its own GL context on its first batch. Workers must be spawned, not forked
(a fork of a process that used OpenGL can deadlock): ``stream.loader(num_workers)`` builds such
a DataLoader.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import BAD_INPUT, MVDPPError
from ..rig import MAX_CONDITION_VIEWS, NUM_RIG_VIEWS, Camera, rig_cameras, sample_input_camera
from .procedural import DEFAULT_DETAIL
from .render import Lighting, Renderer
from .sources import AssetSource, ProceduralSource

CONDITION_MODES = ("single", "sparse", "mixed")
GEN_VIEWS = 8
_BATCH_SALT = 0x62617463
_OBJECT_SALT = 0x6F626A65


def draw_condition_count(mode: str | int, rng: np.random.Generator) -> int:
    """Number of condition views for one batch under ``mode``."""
    if isinstance(mode, (int, np.integer)) and not isinstance(mode, bool):
        return int(mode)
    if mode == "single":
        return 1
    if mode == "sparse":
        return int(rng.integers(2, MAX_CONDITION_VIEWS + 1))
    if mode == "mixed":
        return 1 if rng.uniform() < 0.5 else int(rng.integers(2, MAX_CONDITION_VIEWS + 1))
    raise MVDPPError(BAD_INPUT, f"unknown condition-view mode {mode!r}", f"use one of {', '.join(CONDITION_MODES)} or an int 1-10")


def object_cameras(rng: np.random.Generator, num_condition: int, num_gen: int = GEN_VIEWS):
    """Cameras of one training sample: (condition cameras, generation cameras, their rig ids).

    All azimuths are offset by the first condition camera's azimuth (see the module doc).
    """
    first = sample_input_camera(rng)
    offset = first.azimuth_deg
    condition = [first] + [_rotated(sample_input_camera(rng), offset) for _ in range(num_condition - 1)]
    view_ids = np.sort(rng.choice(NUM_RIG_VIEWS, size=num_gen, replace=False))
    rig = rig_cameras()
    gen = [_rotated(rig[int(i)], offset) for i in view_ids]
    return condition, gen, view_ids


def _rotated(camera: Camera, offset_deg: float) -> Camera:
    return Camera((camera.azimuth_deg + offset_deg) % 360.0, camera.elevation_deg, camera.distance, camera.fov_deg, index=camera.index)


def to_model_range(images: np.ndarray):
    """uint8 (..., H, W, 4) -> torch float32 (..., 4, H, W) in [-1, 1] (alpha too)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(images))
    return tensor.movedim(-1, -3).float().div_(127.5).sub_(1.0)


def _shard_from_env(rank: int | None, world_size: int | None) -> tuple[int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise MVDPPError(BAD_INPUT, f"rank {rank} is not within world size {world_size}", "check RANK / WORLD_SIZE")
    return rank, world_size


def _iterable_dataset_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class MultiViewStream(_iterable_dataset_base()):
    """Whole training batches of rendered views (module doc). Infinite unless ``num_batches``."""

    def __init__(
        self,
        batch_size: int,
        size: int = 256,
        condition_views: str | int = "mixed",
        seed: int = 0,
        assets: str | os.PathLike | None = None,
        num_gen_views: int = GEN_VIEWS,
        num_batches: int | None = None,
        start_batch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        detail: float = DEFAULT_DETAIL,
        samples: int = 4,
    ):
        if batch_size < 1:
            raise MVDPPError(BAD_INPUT, f"batch size {batch_size} must be at least 1", "pass batch_size >= 1")
        if not 1 <= num_gen_views <= NUM_RIG_VIEWS:
            raise MVDPPError(BAD_INPUT, f"num_gen_views {num_gen_views} is not in 1..{NUM_RIG_VIEWS}", "the paper keeps 8")
        if isinstance(condition_views, (int, np.integer)) and not 1 <= condition_views <= MAX_CONDITION_VIEWS:
            raise MVDPPError(BAD_INPUT, f"{condition_views} condition views is not in 1..{MAX_CONDITION_VIEWS}", "pass 1-10 or a mode")
        if not isinstance(condition_views, (int, np.integer)):
            draw_condition_count(condition_views, np.random.default_rng(0))  # validates the mode name
        self.batch_size = int(batch_size)
        self.size = int(size)
        self.condition_views = condition_views
        self.seed = int(seed)
        self.num_gen_views = int(num_gen_views)
        self.num_batches = num_batches
        self.start_batch = int(start_batch)
        self.rank, self.world_size = _shard_from_env(rank, world_size)
        self.samples = samples
        self.source = AssetSource(assets, self.seed) if assets is not None else ProceduralSource(self.seed, detail)
        self._renderer: Renderer | None = None

    # -- sharding ---------------------------------------------------------------------------
    def batch_indices(self, worker_id: int = 0, num_workers: int = 1):
        """Global batch indices this (rank, worker) makes, in order."""
        shards = self.world_size * num_workers
        shard = self.rank * num_workers + worker_id
        end = None if self.num_batches is None else self.start_batch + self.num_batches
        first = self.start_batch + (shard - self.start_batch) % shards
        b = first
        while end is None or b < end:
            yield b
            b += shards

    def __iter__(self):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for b in self.batch_indices(worker_id, num_workers):
            yield self.make_batch(b)

    def loader(self, num_workers: int = 0, **kwargs):
        """A DataLoader over this stream's batches, with spawned workers (see the module doc)."""
        from torch.utils.data import DataLoader

        if num_workers > 0:
            kwargs.setdefault("multiprocessing_context", "spawn")
            kwargs.setdefault("persistent_workers", True)
            kwargs.setdefault("prefetch_factor", 4)
        return DataLoader(self, batch_size=None, num_workers=num_workers, **kwargs)

    # -- one batch --------------------------------------------------------------------------
    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(self.size, samples=self.samples)
        return self._renderer

    def make_batch(self, batch_index: int) -> dict:
        """The batch with global index ``batch_index`` (a pure function of seed and index)."""
        import torch

        batch_rng = np.random.default_rng([self.seed, batch_index, _BATCH_SALT])
        num_condition = draw_condition_count(self.condition_views, batch_rng)
        B, V, S = self.batch_size, self.num_gen_views, self.size
        cond = np.empty((B, num_condition, S, S, 4), dtype=np.uint8)
        gen = np.empty((B, V, S, S, 4), dtype=np.uint8)
        view_ids = np.empty((B, V), dtype=np.int64)
        seeds = np.empty((B,), dtype=np.int64)
        for i in range(B):
            index = batch_index * B + i
            mesh, seeds[i] = self.source.get(index)
            rng = np.random.default_rng([self.seed, index, _OBJECT_SALT])
            condition_cameras, gen_cameras, view_ids[i] = object_cameras(rng, num_condition, V)
            images = self.renderer.render(mesh, condition_cameras + gen_cameras, lighting=Lighting.random(rng))
            cond[i], gen[i] = images[:num_condition], images[num_condition:]
        return {
            "cond": to_model_range(cond),
            "gen": to_model_range(gen),
            "gen_view_ids": torch.from_numpy(view_ids),
            "object_seed": torch.from_numpy(seeds),
        }
