"""The generate job in-process with the tiny model: loading safety, cancel, out of memory, low VRAM."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mvdpp import errors
from mvdpp.errors import JobCancelled, MVDPPError
from mvdpp.protocol import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_RESCALE
from mvdpp.service import job
from mvdpp.service.job import GenerateSettings, run_generate
from mvdpp.service.progress import ProgressClock
from test_images import object_on


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: more threads only oversubscribe it
    pipe, _, device = job.load_pipeline(tiny_checkpoint, "cpu")
    assert device == "cpu"
    yield pipe
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "object.png"
    Image.fromarray(object_on((255, 255, 255))).save(path)
    return path


def views_of(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted((folder / "views").glob("view_*.png"))])


def test_sampler_names_agree_with_the_pipeline():
    from mvdpp.pipelines import SCHEDULERS

    assert set(job.SCHEDULERS) == set(SCHEDULERS)


def test_no_embedded_model_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(job, "default_checkpoint", lambda: None)
    with pytest.raises(MVDPPError) as info:
        job.resolve_checkpoint(None)
    assert info.value.code == errors.CHECKPOINT
    assert "No embedded model is in this build" in info.value.message and "--checkpoint" in info.value.hint


def test_cuda_requested_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(MVDPPError) as info:
        job.resolve_device("cuda")
    assert info.value.code == errors.DEVICE and "--device cpu" in info.value.hint
    assert job.resolve_device("auto") == "cpu"


@pytest.mark.parametrize("damage, expected", [
    ("pickle", "pickled weights"),
    ("foreign_class", "does not trust"),
    ("no_index", "model_index.json is missing"),
    ("no_safetensors", "no .safetensors"),
    ("file", "is not a folder"),
])
def test_only_safe_checkpoints_load(tiny_checkpoint, tmp_path, damage, expected):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    if damage == "pickle":
        (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickled")
    elif damage == "foreign_class":
        index = json.loads((folder / "model_index.json").read_text())
        index["unet"] = ["os", "system"]
        (folder / "model_index.json").write_text(json.dumps(index))
    elif damage == "no_index":
        (folder / "model_index.json").unlink()
    elif damage == "no_safetensors":
        for weights in folder.rglob("*.safetensors"):
            weights.unlink()
    elif damage == "file":
        folder = folder / "model_index.json"
    with pytest.raises(MVDPPError) as info:
        job.load_pipeline(folder, "cpu")
    assert info.value.code == errors.CHECKPOINT and expected in info.value.message and info.value.hint


def test_generate_job_records_what_it_did(pipe, image, tmp_path, tiny_checkpoint):
    reports = []
    folder = run_generate(pipe, [image, image], tmp_path / "r", GenerateSettings(steps=3, seed=11, mesh=False),
                          checkpoint=tiny_checkpoint, progress=lambda *a: reports.append(a))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["seed"] == 11 and meta["settings"]["steps"] == 3 and meta["settings"]["guidance"] == DEFAULT_GUIDANCE
    assert meta["settings"]["guidance_rescale"] == DEFAULT_GUIDANCE_RESCALE
    assert meta["timings"]["denoise"] > 0 and meta["timings"]["write"] > 0
    assert [r for r in reports if r[0] == "denoise"] == [("denoise", i, 3) for i in (1, 2, 3)]
    assert len(list((folder / "inputs").glob("input_*.png"))) == 2
    # a random seed is drawn and recorded when none is given
    again = run_generate(pipe, [image], tmp_path / "s", GenerateSettings(steps=1, mesh=False))
    assert isinstance(json.loads((again / "meta.json").read_text())["seed"], int)


def test_overwrite_replaces_an_existing_result(pipe, image, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(MVDPPError) as info:
        run_generate(pipe, [image], out, GenerateSettings(steps=1, mesh=False))
    assert info.value.code == errors.OUTPUT_EXISTS and (out / "old.txt").exists()
    run_generate(pipe, [image], out, GenerateSettings(steps=1, mesh=False, overwrite=True))
    assert not (out / "old.txt").exists() and len(list((out / "views").iterdir())) == 32


def test_cancel_takes_effect_inside_a_denoising_step(pipe, image, tmp_path):
    # should_cancel turns true a few model blocks into the first step: the job must stop there,
    # not at the end of the step (a paper-size step takes seconds).
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 4

    reports = []
    with pytest.raises(JobCancelled):
        run_generate(pipe, [image], tmp_path / "r", GenerateSettings(steps=50, mesh=False),
                     progress=lambda *a: reports.append(a), should_cancel=should_cancel)
    assert not any(stage == "denoise" for stage, *_ in reports)  # not even one step finished
    assert not (tmp_path / "r").exists() and list(tmp_path.iterdir()) == []
    # the hooks are gone afterwards: a normal job runs
    run_generate(pipe, [image], tmp_path / "ok", GenerateSettings(steps=1, mesh=False))


def test_gpu_out_of_memory_is_a_clear_error(pipe, image, tmp_path, monkeypatch):
    import torch

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipe.unet, "forward", out_of_memory)
    with pytest.raises(MVDPPError) as info:
        run_generate(pipe, [image], tmp_path / "r", GenerateSettings(steps=2, guidance=1.0, mesh=False))
    assert info.value.code == errors.OUT_OF_MEMORY
    assert "ran out of memory" in info.value.message and "--low-vram" in info.value.hint
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MVDPPError) as info:  # already in low-VRAM mode: other advice
        run_generate(pipe, [image], tmp_path / "r", GenerateSettings(steps=2, guidance=1.0, mesh=False), low_vram=True)
    assert info.value.code == errors.OUT_OF_MEMORY and "already on" in info.value.hint


@pytest.mark.parametrize("raised", [RuntimeError("CUDA error: out of memory"), MemoryError()])
def test_out_of_memory_translation(raised):
    with pytest.raises(MVDPPError) as info:
        with job.translate_out_of_memory("testing"):
            raise raised
    assert info.value.code == errors.OUT_OF_MEMORY and "testing" in info.value.message and info.value.hint
    with pytest.raises(RuntimeError, match="unrelated"):
        with job.translate_out_of_memory("testing"):
            raise RuntimeError("unrelated")


def test_low_vram_mode_gives_the_same_views(pipe, image, tmp_path):
    settings = GenerateSettings(steps=2, seed=4, mesh=False)
    normal = views_of(run_generate(pipe, [image], tmp_path / "a", settings))
    low = views_of(run_generate(pipe, [image], tmp_path / "b", settings, low_vram=True))
    assert np.abs(normal.astype(int) - low.astype(int)).max() <= 2  # sequential guidance, chunked VAE: same maths


def test_views_without_an_object_cannot_be_meshed(pipe, image, tmp_path):
    import torch

    bias = pipe.vae.decoder.conv_out.bias
    saved = bias[3].item()
    with torch.no_grad():
        bias[3] = -20.0  # every view fully transparent
    try:
        with pytest.raises(MVDPPError) as info:
            run_generate(pipe, [image], tmp_path / "r", GenerateSettings(steps=1, mesh=True))
    finally:
        with torch.no_grad():
            bias[3] = saved
    assert info.value.code == job.NO_OBJECT and "--no-mesh" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_progress_clock_estimates_time_left_per_stage():
    now = [100.0]
    clock = ProgressClock(clock=lambda: now[0])
    now[0] = 101.0
    first = clock.update("denoise", 1, 5)
    assert first.elapsed_s == 1.0 and first.eta_s is None  # the first step may include warm-up
    now[0] = 103.0
    third = clock.update("denoise", 3, 5)
    assert third.eta_s == pytest.approx(2.0)  # 1 s per step since step 1, 2 steps left
    now[0] = 104.0
    assert clock.update("denoise", 5, 5).eta_s == 0.0
    now[0] = 110.0
    mesh = clock.update("mesh:hull", 1, 4)
    assert mesh.elapsed_s == 10.0 and mesh.eta_s is None and clock.stage_seconds["denoise"] == 4.0  # from the job start: work before a first report counts
    assert mesh.as_event_fields() == {"stage": "mesh:hull", "step": 1, "total": 4, "elapsed_s": 10.0, "eta_s": None}


def test_views_that_cannot_be_meshed_are_kept_with_a_warning(pipe, image, tmp_path, monkeypatch):
    """When the views disagree on any solid (a weak checkpoint), the job keeps the 32 views,
    writes no mesh, says why in meta.json and in the result event's warning."""
    import mvdpp.recon

    def disagreeing_views(*args, **kwargs):
        raise MVDPPError(errors.INCONSISTENT_VIEWS, "The views do not agree on any solid.", "Try another seed.")

    monkeypatch.setattr(mvdpp.recon, "reconstruct", disagreeing_views)
    folder = run_generate(pipe, [image], tmp_path / "r", GenerateSettings(steps=1, mesh=True))
    assert len(list((folder / "views").glob("view_*.png"))) == 32
    assert not (folder / "mesh.glb").exists()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["mesh_skipped"]["code"] == errors.INCONSISTENT_VIEWS
    event = job.generate_result(folder)
    assert event["folder"] == str(folder) and "do not agree" in event["warning"] and "Try another seed" in event["warning"]
    assert "warning" not in job.generate_result(run_generate(pipe, [image], tmp_path / "s", GenerateSettings(steps=1, mesh=False)))


def test_the_job_meshes_its_views_as_generated_views(pipe, image, tmp_path, monkeypatch):
    """The model's views get the reconstruction preset for generated views (docs/reconstruction.md)."""
    import mvdpp.recon

    calls = []

    def record(*args, **kwargs):
        calls.append(kwargs)
        raise MVDPPError(errors.INCONSISTENT_VIEWS, "recorded", "no mesh needed here")

    monkeypatch.setattr(mvdpp.recon, "reconstruct", record)
    run_generate(pipe, [image], tmp_path / "r", GenerateSettings(steps=1, mesh=True))
    assert [call.get("view_source") for call in calls] == ["generated"]


def test_weights_are_half_precision_on_cuda_only_and_an_fp16_vae_stays_float32(monkeypatch):
    """bf16 where the GPU has it, fp16 otherwise (the VAE then kept in fp32: fp16 overflows in
    SD-style decoders), fp32 on the CPU."""
    torch = pytest.importorskip("torch")
    from mvdpp.presets import build_pipeline

    assert job.model_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert job.model_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert job.model_dtype("cuda") == torch.float16
    pipe = build_pipeline("tiny").to(dtype=torch.float16)
    job.keep_vae_in_float32(pipe)
    assert pipe.vae.dtype == torch.float32 and pipe.unet.dtype == torch.float16
