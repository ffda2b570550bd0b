"""tools/probe_recon_generated.py: cached generated views -> meshes under variants -> scores."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trimesh")
pytest.importorskip("moderngl")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("probe_recon_generated", ROOT / "tools" / "probe_recon_generated.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_variants_parse_into_view_choice_preset_and_overrides():
    assert probe.parse_variant("hull_tolerated_votes=8,stereo=false") == {
        "views": "generated", "view_source": "rendered", "cone": False, "inward": 0.0,
        "overrides": {"hull_tolerated_votes": 8, "stereo": False}}
    assert probe.parse_variant("truth,generated")["views"] == "truth"
    assert probe.parse_variant("truth,generated")["view_source"] == "generated"
    assert probe.parse_variant("cone")["cone"]
    assert probe.parse_variant("truth,inward=0.002")["inward"] == 0.002
    assert probe.parse_variant("truth")["inward"] == 0.0
    with pytest.raises(ValueError):
        probe.parse_variant("votes8")


def test_move_inward_shrinks_a_sphere_by_the_distance():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    probe.move_inward(sphere, 0.01)
    radii = np.linalg.norm(sphere.vertices, axis=1)
    assert np.allclose(radii, 0.29, atol=1e-4)


def test_table_counts_means_failures_and_wins():
    records = [
        {"object": "a", "variant": "base", "chamfer": 0.10, "iou": 0.2, "fscore": 0.1, "seconds": 10.0},
        {"object": "b", "variant": "base", "chamfer": 0.20, "iou": 0.4, "fscore": 0.3, "seconds": 20.0},
        {"object": "a", "variant": "new", "chamfer": 0.05, "iou": 0.1, "fscore": 0.2, "seconds": 30.0},
        {"object": "b", "variant": "new", "chamfer": None, "iou": 0.0, "fscore": 0.0, "seconds": 1.0},
    ]
    rows = {line.split(" | ")[0].strip("| "): line for line in probe.summarise(records, "base").splitlines()[2:]}
    assert rows["base"] == "| base | 2 | 0 | 0.15000 | 0.300 | 0.200 | 15.0 | - |"
    # Chamfer only over the meshes that exist; a failed mesh wins nothing
    assert rows["new"] == "| new | 2 | 1 | 0.05000 | 0.050 | 0.100 | 15.5 | 1/2 / 0/2 |"


def test_generate_score_and_resume_on_a_tiny_set(tiny_checkpoint, tmp_path):
    from mvdpp.cli import main

    torch.set_num_threads(1)
    evalset = tmp_path / "set"
    assert main(["make-evalset", str(evalset), "--count", "1", "--size", "64", "--inputs", "1", "--detail", "0.08",
                 "--quiet"]) == 0
    cache = tmp_path / "views"
    probe.generate_cache(evalset, cache, str(tiny_checkpoint), "cpu", steps=1, log=lambda message: None)
    (views_file,) = cache.glob("object_*.npy")
    assert np.load(views_file).shape == (32, 64, 64, 4)
    out = tmp_path / "scores.jsonl"
    variants = ["truth,grid_resolution=33", "truth,generated,grid_resolution=33", "grid_resolution=33", "cone"]
    records = probe.score(evalset, cache, variants, out, samples=2000, iou_resolution=32, log=lambda message: None)
    assert [r["variant"] for r in records] == variants
    by_variant = {r["variant"]: r for r in records}
    assert by_variant["truth,grid_resolution=33"]["iou"] > 0.5  # ground-truth views make a real mesh
    assert by_variant["cone"]["chamfer"] is not None
    # a random model's views may give no mesh: that is a recorded failure, not an error
    assert by_variant["grid_resolution=33"]["error"] is None or by_variant["grid_resolution=33"]["iou"] == 0.0
    assert probe.score(evalset, cache, variants, out, samples=2000, iou_resolution=32, log=lambda m: None) == []
    assert len(probe.read_records([out])) == len(variants)
    assert json.loads(out.read_text().splitlines()[0])["samples"] == 2000
