"""`mvdpp eval`: report structure, baselines ordering, contact sheets, fixed seeds, clear errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("trimesh")
pytest.importorskip("moderngl")
from PIL import Image  # noqa: E402

from mvdpp.cli import main  # noqa: E402
from mvdpp.evaluation.contact_sheet import sheet_size  # noqa: E402
from mvdpp.protocol import DEFAULT_GUIDANCE_RESCALE  # noqa: E402

QUICK = ["--steps", "2", "--mesh-grid", "32", "--surface-samples", "3000", "--iou-resolution", "32", "--no-lpips",
         "--device", "cpu", "--sheet-objects", "2", "--workers", "0"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Two torch threads on the shared 2-core machine spin at several times the CPU cost."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def evalset(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalset") / "set"
    assert main(["make-evalset", str(out), "--count", "2", "--size", "64", "--inputs", "4", "--detail", "0.08",
                 "--quiet"]) == 0
    return out


def test_eval_reports_views_meshes_and_baselines(evalset, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["eval", str(evalset), "--checkpoint", str(tiny_checkpoint), "--out", str(out), *QUICK]) == 0
    captured = capsys.readouterr()
    assert "[2/2] object_" in captured.err  # progress on stderr
    assert "| MVD++ (generated views) | 4 |" in captured.out  # the markdown table on stdout

    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "mvdpp-eval-report" and report["settings"]["input_counts"] == [1, 4]
    assert report["settings"]["guidance_rescale"] == DEFAULT_GUIDANCE_RESCALE  # what a generate job uses
    assert [o["folder"] for o in report["objects"]] == ["object_0000000000", "object_0000000001"]
    for obj in report["objects"]:
        assert set(obj["runs"]) == {"1", "4"}
        for run in obj["runs"].values():
            assert 0 < run["views"]["psnr"] < 100 and -1 <= run["views"]["ssim"] <= 1
            assert set(run["mesh"]) == {"chamfer", "fscore", "iou"}
            assert set(run["inputs_only"]["mesh"]) == {"chamfer", "fscore", "iou"}
        # the upper bound (ground-truth views) reconstructs the object closely
        assert obj["upper_bound"]["mesh_error"] is None and obj["upper_bound"]["mesh"]["iou"] > 0.5
    means = report["means"]
    assert means["upper_bound"]["objects"] == 2
    for count in ("1", "4"):
        generated = means["runs"][count]["generated"]
        # a random model's views are noise: far worse geometry than the ground-truth views give
        assert generated["iou"] < means["upper_bound"]["iou"] - 0.3
        assert generated["fscore"] < means["upper_bound"]["fscore"]
        assert generated["psnr"] is not None and generated["ssim"] is not None
    # four true input views carve a real hull: better than nothing, worse than all 32 views
    inputs4 = means["runs"]["4"]["inputs_only"]
    assert 0.2 < inputs4["iou"] < means["upper_bound"]["iou"]
    # one view: the reconstruction needs 4, so the baseline is the input's silhouette cone
    inputs1 = means["runs"]["1"]["inputs_only"]
    assert {o["runs"]["1"]["inputs_only"]["method"] for o in report["objects"]} == {"silhouette hull"}
    assert inputs1["mesh_failures"] == 0 and 0.05 < inputs1["iou"] < means["upper_bound"]["iou"]
    assert (out / "report.md").read_text().count("\n| ") >= 5

    for count in ("1", "4"):
        sheet = out / f"contact_sheet_{count}in.png"
        assert report["contact_sheets"][count] == sheet.name
        with Image.open(sheet) as image:
            assert image.size == sheet_size(2, 96) == (9 * 96, 6 * 96)

    # fixed seeds: one object alone reproduces its figures exactly, scored in a worker process too
    again = tmp_path / "again"
    assert main(["eval", str(evalset), "--checkpoint", str(tiny_checkpoint), "--out", str(again), "--limit", "1",
                 "--inputs", "1", *QUICK, "--workers", "1"]) == 0
    first = json.loads((again / "report.json").read_text())["objects"][0]
    assert first["runs"]["1"]["views"] == report["objects"][0]["runs"]["1"]["views"]
    assert first["runs"]["1"]["seed"] == report["objects"][0]["runs"]["1"]["seed"]
    assert first["upper_bound"]["mesh"] == report["objects"][0]["upper_bound"]["mesh"]
    assert first["runs"]["1"]["inputs_only"]["mesh"] == report["objects"][0]["runs"]["1"]["inputs_only"]["mesh"]


def test_shards_and_interrupted_runs_resume_from_the_finished_objects(evalset, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    quick = [*QUICK, "--inputs", "4", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    assert main(["eval", str(evalset), "--shard", "1/2", *quick]) == 0  # object 0 only, no report files
    assert not (out / "report.json").exists()
    first = json.loads((out / "objects" / "object_0000000000.json").read_text())["record"]
    capsys.readouterr()
    assert main(["eval", str(evalset), *quick]) == 0  # the whole set: object 0 is kept, object 1 evaluated
    err = capsys.readouterr().err
    assert "object_0000000000" in err.split("kept from an earlier run")[0].splitlines()[-1]
    assert err.count("kept from an earlier run") == 1
    report = json.loads((out / "report.json").read_text())
    assert report["objects"][0] == first and len(report["objects"]) == 2
    with Image.open(out / "contact_sheet_4in.png") as image:
        assert image.size == sheet_size(2, 96)
    # other settings: nothing is reused
    assert main(["eval", str(evalset), *quick, "--steps", "1", "--limit", "1"]) == 0
    assert "kept from an earlier run" not in capsys.readouterr().err
    # a guidance interval is another setting too, and the report names it
    assert main(["eval", str(evalset), *quick, "--limit", "1", "--guidance-interval", "0.5", "1"]) == 0
    assert "kept from an earlier run" not in capsys.readouterr().err
    partly_guided = json.loads((out / "report.json").read_text())
    assert partly_guided["settings"]["guidance_interval"] == [0.5, 1.0]
    assert partly_guided["objects"][0]["runs"]["4"]["views"] != first["runs"]["4"]["views"]  # it reached the sampler
    assert "guided for t/T in [0.5, 1.0]" in (out / "report.md").read_text()


def test_eval_refuses_bad_folders_checkpoints_and_input_counts(evalset, tiny_checkpoint, tmp_path, capsys):
    def error_of(argv):
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "does not exist" in error_of(["eval", str(tmp_path / "missing"), "--checkpoint", str(tiny_checkpoint)])
    (tmp_path / "empty").mkdir()
    assert "evalset.json is missing" in error_of(["eval", str(tmp_path / "empty"), "--checkpoint", str(tiny_checkpoint)])
    err = error_of(["eval", str(evalset), "--checkpoint", str(tiny_checkpoint), "--inputs", "6"])
    assert "6 were asked for" in err and "--inputs 6" in err
    assert "1 to 10" in error_of(["eval", str(evalset), "--inputs", "11"])
    assert "--guidance-rescale 1.5 is not in 0..1" in error_of(["eval", str(evalset), "--guidance-rescale", "1.5"])
    assert "--guidance-interval 0.8 0.2 is not an interval" in error_of(["eval", str(evalset), "--guidance-interval", "0.8", "0.2"])
    assert "model_index.json is missing" in error_of(["eval", str(evalset), "--checkpoint", str(tmp_path / "empty"),
                                                      "--out", str(tmp_path / "r")])


def test_baselines_are_reused_from_an_earlier_run_only_under_the_same_mesh_settings(evalset, tiny_checkpoint, tmp_path,
                                                                                     capsys, monkeypatch):
    """--baselines-from: the upper bound and the inputs-only meshes do not depend on the checkpoint,
    so a second checkpoint's evaluation takes them from the first one's records (and says so)
    instead of reconstructing them; under other mesh settings they are computed again."""
    from mvdpp.evaluation import runner

    quick = [*QUICK, "--inputs", "4", "--limit", "1", "--checkpoint", str(tiny_checkpoint)]
    first_dir = tmp_path / "first"
    assert main(["eval", str(evalset), *quick, "--out", str(first_dir)]) == 0
    first = json.loads((first_dir / "report.json").read_text())["objects"][0]

    def not_again(*args, **kwargs):
        raise AssertionError("a reused baseline was reconstructed again")

    with monkeypatch.context() as patch:
        patch.setattr(runner, "upper_bound", not_again)
        patch.setattr(runner, "inputs_only", not_again)
        # --steps 1 stands for another checkpoint: the generated views and their scores differ
        assert main(["eval", str(evalset), *quick, "--steps", "1", "--out", str(tmp_path / "second"),
                     "--baselines-from", str(first_dir)]) == 0
    report = json.loads((tmp_path / "second" / "report.json").read_text())
    second = report["objects"][0]
    assert second["upper_bound"] == first["upper_bound"]
    assert second["runs"]["4"]["inputs_only"] == first["runs"]["4"]["inputs_only"]
    assert second["runs"]["4"]["views"] != first["runs"]["4"]["views"]  # the model's part was evaluated anew
    assert second["baselines_reused_from"] == str(first_dir)
    assert any("reused from" in note for note in report["notes"])
    assert "reused from" in (tmp_path / "second" / "report.md").read_text()

    # another mesh grid: the earlier baselines do not apply, so they are reconstructed (no note)
    assert main(["eval", str(evalset), *quick, "--mesh-grid", "24", "--out", str(tmp_path / "third"),
                 "--baselines-from", str(first_dir)]) == 0
    third = json.loads((tmp_path / "third" / "report.json").read_text())
    assert "baselines_reused_from" not in third["objects"][0] and not third["notes"]

    capsys.readouterr()
    assert main(["eval", str(evalset), *quick, "--baselines-from", str(tmp_path)]) == 2
    assert "is not the --out folder of an earlier `mvdpp eval`" in capsys.readouterr().err


def test_baseline_key_holds_the_presets_fields_not_only_their_names(monkeypatch):
    """A preset whose fields change (same name) must not reuse baselines measured under the old one."""
    from dataclasses import replace

    from mvdpp.evaluation.resume import baseline_key
    from mvdpp.evaluation.runner import EvalSettings
    from mvdpp.recon import settings

    def key():
        return baseline_key({"evalset": {"count": 1}, "evaluation_version": 1, "settings": EvalSettings().describe()})

    before = key()
    assert key() == before
    monkeypatch.setitem(settings.PRESETS, "draft", replace(settings.PRESETS["draft"], refine_vertices=False))
    assert key() != before
