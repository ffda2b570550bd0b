"""The training stream: batch layout, condition-view modes, sharding and determinism."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("moderngl")

from mvdpp.data import seeds  # noqa: E402
from mvdpp.data.stream import MultiViewStream, draw_condition_count, object_cameras  # noqa: E402
from mvdpp.errors import MVDPPError  # noqa: E402
from mvdpp.rig import RIG_AZIMUTHS_DEG, rig_cameras  # noqa: E402

SIZE = 32
FAST = dict(size=SIZE, detail=0.1, samples=0)  # coarse objects, no multisampling: quick on llvmpipe


def test_batch_matches_the_agreed_layout():
    stream = MultiViewStream(batch_size=2, condition_views=3, seed=0, num_batches=1, **FAST)
    (batch,) = list(stream)
    assert set(batch) == {"cond", "gen", "gen_view_ids", "object_seed"}
    assert batch["cond"].shape == (2, 3, 4, SIZE, SIZE) and batch["cond"].dtype == torch.float32
    assert batch["gen"].shape == (2, 8, 4, SIZE, SIZE) and batch["gen"].dtype == torch.float32
    assert batch["gen_view_ids"].shape == (2, 8) and batch["gen_view_ids"].dtype == torch.int64
    assert batch["object_seed"].shape == (2,) and batch["object_seed"].dtype == torch.int64
    for key in ("cond", "gen"):
        x = batch[key]
        assert x.min() >= -1.0 and x.max() <= 1.0
        alpha = x[:, :, 3]
        assert (alpha > 0).any() and (alpha == -1.0).any()  # object and background in the mask
        background = alpha == -1.0
        assert torch.all(x[:, :, :3].permute(2, 0, 1, 3, 4)[:, background] == 1.0)  # white background
    for ids in batch["gen_view_ids"]:
        assert len(set(ids.tolist())) == 8 and ids.min() >= 0 and ids.max() < 32
    assert all(seeds.TRAIN_SEED_START <= s < seeds.TRAIN_SEED_END for s in batch["object_seed"].tolist())


def test_condition_view_modes():
    rng = np.random.default_rng(0)
    assert {draw_condition_count("single", rng) for _ in range(50)} == {1}
    sparse = [draw_condition_count("sparse", rng) for _ in range(400)]
    assert set(sparse) == set(range(2, 11))
    mixed = [draw_condition_count("mixed", rng) for _ in range(400)]
    assert 0.4 < np.mean(np.array(mixed) == 1) < 0.6 and max(mixed) == 10
    with pytest.raises(MVDPPError):
        draw_condition_count("dense", rng)
    with pytest.raises(MVDPPError):
        MultiViewStream(batch_size=1, condition_views=11)


def test_cameras_are_relative_to_the_first_condition_view():
    rig = rig_cameras()
    for trial in range(5):
        condition, gen, ids = object_cameras(np.random.default_rng(trial), 4)
        offset = condition[0].azimuth_deg
        assert offset in RIG_AZIMUTHS_DEG
        for camera in condition[1:]:  # other inputs also sit on rig azimuths relative to the first
            assert (camera.azimuth_deg - offset) % 45.0 == pytest.approx(0.0, abs=1e-9)
            assert -10.0 <= camera.elevation_deg <= 45.0 and 1.5 <= camera.distance <= 2.2
        for camera, i in zip(gen, ids):
            assert camera.index == i
            assert camera.elevation_deg == rig[i].elevation_deg and camera.distance == rig[i].distance
            assert (camera.azimuth_deg - offset - rig[i].azimuth_deg) % 360.0 == pytest.approx(0.0, abs=1e-9)


def test_same_seed_same_batches_and_other_seed_differs():
    a = MultiViewStream(batch_size=1, seed=3, num_batches=2, **FAST)
    b = MultiViewStream(batch_size=1, seed=3, num_batches=2, **FAST)
    c = MultiViewStream(batch_size=1, seed=4, num_batches=1, **FAST)
    for x, y in zip(a, b):
        for key in x:
            assert torch.equal(x[key], y[key])
    assert next(iter(c))["object_seed"].item() != a.make_batch(0)["object_seed"].item()


def test_ranks_and_workers_never_repeat_objects():
    single = [s for batch in MultiViewStream(batch_size=2, num_batches=6, rank=0, world_size=1, **FAST).batch_indices()
              for s in range(batch * 2, batch * 2 + 2)]
    per_rank = []
    for rank in range(2):
        stream = MultiViewStream(batch_size=2, num_batches=6, rank=rank, world_size=2, **FAST)
        for worker in range(3):
            per_rank.append(list(stream.batch_indices(worker, 3)))
    shards = [b for shard in per_rank for b in shard]
    assert sorted(shards) == list(range(6))  # every batch made exactly once across 2 ranks x 3 workers
    assert sorted(single) == list(range(12))
    # the seed mapping is one-to-one, so distinct object indices are distinct objects
    assert len({seeds.training_object_seed(0, k) for k in range(100_000)}) == 100_000


@pytest.mark.slow
def test_dataloader_workers_deliver_distinct_objects_in_order():
    stream = MultiViewStream(batch_size=1, num_batches=4, seed=7, condition_views="single", **FAST)
    stream.make_batch(0)  # the parent has a GL context too: workers must still work (spawned)
    loaded = [batch["object_seed"].item() for batch in stream.loader(num_workers=2)]
    expected = [seeds.training_object_seed(7, k) for k in range(4)]
    assert loaded == expected  # distinct, and in the same order as a single process


def test_rank_from_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    stream = MultiViewStream(batch_size=1, num_batches=9, **FAST)
    assert list(stream.batch_indices()) == [1, 5]
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(MVDPPError):
        MultiViewStream(batch_size=1)


def test_asset_folder_source(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    for i, size in enumerate((0.5, 1.0, 2.0)):
        box = trimesh.creation.box((size, size / 2, size / 3))
        box.visual.vertex_colors = np.tile([40 * i, 100, 200, 255], (len(box.vertices), 1)).astype(np.uint8)
        box.export(tmp_path / f"box{i}.ply")
    stream = MultiViewStream(batch_size=3, num_batches=2, assets=tmp_path, condition_views=1, **FAST)
    epoch0, epoch1 = (b["object_seed"].tolist() for b in stream)
    assert sorted(epoch0) == [0, 1, 2] and sorted(epoch1) == [0, 1, 2]  # each asset once per epoch
