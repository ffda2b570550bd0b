"""`mvdpp make-evalset`: result-folder layout, ground truth in the rig's frame, sharding, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("trimesh")
pytest.importorskip("moderngl")
from PIL import Image  # noqa: E402

from mvdpp.cli import main  # noqa: E402
from mvdpp.data.assets import load_asset  # noqa: E402
from mvdpp.data.evalset import object_folder_name, read_input_cameras  # noqa: E402
from mvdpp.data.render import Lighting, Renderer  # noqa: E402
from mvdpp.result import read_result  # noqa: E402
from mvdpp.rig import rig_cameras  # noqa: E402

SIZE = 32


def test_evalset_folders_read_as_results_and_match_their_ground_truth(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["make-evalset", str(out), "--count", "2", "--first-seed", "5", "--size", str(SIZE), "--inputs", "3",
                 "--detail", "0.08"]) == 0
    assert "wrote 2 objects" in capsys.readouterr().out
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == [object_folder_name(5), object_folder_name(6)]

    folder = out / object_folder_name(5)
    result = read_result(folder)
    assert [v.camera.index for v in result.views] == list(range(32))
    assert result.image_size == (SIZE, SIZE) and result.mesh_path is not None
    assert len(result.input_paths) == 3
    inputs = read_input_cameras(folder)
    assert len(inputs) == 3 and inputs[0].azimuth_deg == 0.0  # the first input defines azimuth 0
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["object_seed"] == 5 and meta["num_inputs"] == 3

    # the ground-truth mesh, read back into the rig's frame, renders to the stored views
    mesh = load_asset(result.mesh_path)
    assert mesh.visual.kind == "vertex"
    lighting = Lighting(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["lighting"].items()})
    renderer = Renderer(SIZE)
    rerendered = renderer.render(mesh, rig_cameras() + inputs, lighting=lighting)
    renderer.release()
    stored = [np.asarray(Image.open(v.image_path)) for v in result.views]
    stored += [np.asarray(Image.open(p)) for p in result.input_paths]
    difference = np.abs(rerendered.astype(int) - np.stack(stored).astype(int))
    assert difference.mean() < 0.5 and np.percentile(difference, 99) <= 8


def test_shards_split_the_set_and_reruns_skip_finished_objects(tmp_path, capsys):
    out = tmp_path / "eval"
    common = ["make-evalset", str(out), "--count", "3", "--first-seed", "20", "--size", "16", "--quiet", "--detail", "0.1"]
    assert main(common + ["--shard", "2/2"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [object_folder_name(21)]
    assert main(common + ["--shard", "1/2"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [object_folder_name(s) for s in (20, 21, 22)]
    capsys.readouterr()
    assert main(common) == 0
    assert "wrote 0 objects, skipped 3" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".partial")]


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["make-evalset", str(out), "--count", "1", "--size", "16", "--shard", "3/2"]) == 2
    assert "shard" in capsys.readouterr().err
    assert main(["make-evalset", str(out), "--count", "1", "--first-seed", str(2**31)]) == 2
    assert "below" in capsys.readouterr().err
    assert main(["make-evalset", str(out), "--count", "1", "--size", "16", "--quiet"]) == 0
    assert main(["make-evalset", str(out), "--count", "1", "--size", "32", "--quiet"]) == 2  # other settings, same folder
    assert "other settings" in capsys.readouterr().err


def test_evalset_from_an_asset_folder(tmp_path):
    import trimesh

    assets = tmp_path / "assets"
    assets.mkdir()
    for i in range(3):
        box = trimesh.creation.box((0.4 + 0.2 * i, 0.5, 0.3))
        box.visual.vertex_colors = np.tile([60 * i, 120, 200, 255], (len(box.vertices), 1)).astype(np.uint8)
        box.export(assets / f"box{i}.ply")
    out = tmp_path / "eval"
    assert main(["make-evalset", str(out), "--assets", str(assets), "--first-seed", "1", "--count", "2",
                 "--size", "16", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [object_folder_name(1), object_folder_name(2)]
    meta = json.loads((out / object_folder_name(2) / "meta.json").read_text())
    assert meta["source"].startswith("assets:")
    mesh = load_asset(out / object_folder_name(2) / "mesh.glb")
    assert sorted(np.round(mesh.extents, 6)) == pytest.approx(sorted(np.array([0.8, 0.5, 0.3]) / 0.8))
    assert main(["make-evalset", str(tmp_path / "e2"), "--assets", str(assets), "--count", "4", "--size", "16"]) == 2
