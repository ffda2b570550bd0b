"""`mvdpp train` on the CPU with the tiny preset and the real procedural stream (64 px)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mvdpp.cli import main  # noqa: E402
from mvdpp.errors import MVDPPError  # noqa: E402
from mvdpp.training.run_folder import STATE_FILE, RunFolder  # noqa: E402
from mvdpp.training.stages import STAGES, TrainSettings  # noqa: E402
from mvdpp.training.trainer import Trainer  # noqa: E402


def tiny_settings(output, stage="unet-v-mixed", **overrides) -> TrainSettings:
    values = dict(stage=stage, output=str(output), preset="tiny", batch_size=1, warmup_steps=0, log_every=1,
                  sample_every=0, checkpoint_every=0, keep_checkpoints=0, device="cpu")
    values.update(overrides)
    return TrainSettings(**values)


def logged_losses(run_dir) -> list[float]:
    return [r["loss"] for r in RunFolder(run_dir).read_log("train")]


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_overfits_one_batch(tmp_path, stage, tiny_checkpoint):
    """Every stage's step runs on a real rendered batch, and repeating one batch with the same
    noise drives its loss down (the gradients reach the trained weights with the right sign)."""
    start = {"init_from": str(tiny_checkpoint)} if STAGES[stage].decoder_only else {}  # it needs a VAE to start from
    trainer = Trainer(tiny_settings(tmp_path, stage, learning_rate=3e-3, **start), quiet=True)
    trainer.setup()
    batch = next(trainer.batches())
    assert batch["gen"].shape == (1, 8, 4, 64, 64) and batch["gen_view_ids"].shape == (1, 8)
    if stage.startswith("vae"):  # the VAE step is the slow one on the CPU: 3 of the 8 views suffice
        batch = {**batch, "gen": batch["gen"][:, :3]}
    losses = [float(trainer.train_step(batch, randomness_of_step=0)[0]) for _ in range(10)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.7 * losses[0], losses
    assert trainer.state.step == 10
    expected_trained = {"vae"} if stage.startswith("vae") else {"unet", "image_encoder"}
    assert set(trainer.trained_names) == expected_trained


def test_vae_decoder_stage_keeps_the_encoder_and_its_latents_bit_identical(tmp_path, tiny_checkpoint):
    """vae-decoder trains the decoder (and the exported EMA weights move) while the encoder, and
    so every latent a trained UNet learned, stays exactly as it was."""
    trainer = Trainer(tiny_settings(tmp_path, "vae-decoder", learning_rate=3e-3, max_steps=3, export=str(tmp_path / "export"),
                                    init_from=str(tiny_checkpoint)), quiet=True)
    trainer.setup()
    vae = trainer.pipe.vae
    encoder_before = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    trainer.train()
    assert all(torch.equal(encoder_before[k], v) for k, v in vae.encoder.state_dict().items())
    assert any(not torch.equal(decoder_before[k], v) for k, v in vae.decoder.state_dict().items())

    from diffusers import AutoencoderKL

    exported = AutoencoderKL.from_pretrained(tmp_path / "export", subfolder="vae")  # fp16 on disk
    assert all(torch.equal(encoder_before[k].half(), v.half()) for k, v in exported.encoder.state_dict().items())
    assert any(not torch.equal(decoder_before[k].half(), v.half()) for k, v in exported.decoder.state_dict().items())


def logged_objects(run_dir) -> list[list[int]]:
    return [json.loads(line)["object_seed"] for line in (Path(run_dir) / "objects-rank0.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
    """The same 4 steps on the real stream, run straight through and as 2 + 2 with a resume."""
    root = tmp_path_factory.mktemp("resume")
    straight, split = root / "straight", root / "split"
    Trainer(tiny_settings(straight, max_steps=4, log_objects=True), quiet=True).train()
    first = Trainer(tiny_settings(split, max_steps=2, log_objects=True), quiet=True).train()
    second = Trainer(tiny_settings(split, max_steps=4, log_objects=True), resume=True, quiet=True).train()
    return straight, split, first, second


def test_resume_continues_the_stream_and_the_optimisation(resumed_runs):
    straight, split, first, second = resumed_runs
    assert first.steps_done == 2 and second.steps_done == 2 and second.state.step == 4
    # The resumed run trains on the very objects the uninterrupted one did, from the same state.
    assert logged_objects(straight) == logged_objects(split) and len(logged_objects(split)) == 4
    # The renderer may differ by one grey level on a few pixels depending on what its GL context
    # drew before, so losses on rendered data agree closely, not bitwise (bitwise: next test).
    assert logged_losses(split) == pytest.approx(logged_losses(straight), rel=1e-3)
    state = json.loads((RunFolder(split).latest_checkpoint() / STATE_FILE).read_text())
    assert state["step"] == 4 and state["data_position"] == 4 and state["samples_seen"] == 4


def test_resume_is_bit_exact(tmp_path):
    """Weights, AdamW, LR schedule, EMA, RNG and data position all restored: a 2 + 2 step run
    logs exactly the losses of a 4 step run (data made on the device from the batch index)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    kw = dict(data="synthetic", warmup_steps=3, batch_size=2)
    Trainer(tiny_settings(straight, max_steps=4, **kw), quiet=True).train()
    Trainer(tiny_settings(split, max_steps=2, **kw), quiet=True).train()
    Trainer(tiny_settings(split, max_steps=4, **kw), resume=True, quiet=True).train()
    assert len(logged_losses(straight)) == 4
    assert logged_losses(straight) == logged_losses(split)


def test_resume_takes_an_explicit_learning_rate_and_keeps_the_saved_one_otherwise(tmp_path):
    """A checkpoint stores its learning rate; resuming with --lr must train at the new rate
    (lowering it for the last steps is a resume), resuming without --lr at the saved one."""
    kw = dict(data="synthetic", batch_size=1)
    Trainer(tiny_settings(tmp_path, max_steps=2, learning_rate=2e-4, **kw), quiet=True).train()
    resumed = Trainer(tiny_settings(tmp_path, max_steps=4, learning_rate=5e-5, **kw), resume=True, quiet=True)
    resumed.setup()
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(5e-5)  # already the first resumed step
    resumed.train()
    Trainer(tiny_settings(tmp_path, max_steps=5, **kw), resume=True, quiet=True).train()
    rates = [r["lr"] for r in RunFolder(tmp_path).read_log("train")]
    assert rates == pytest.approx([2e-4, 2e-4, 5e-5, 5e-5, 5e-5])


def test_cosine_schedule_warms_up_decays_to_zero_and_survives_a_resume(tmp_path):
    """--lr-schedule cosine: linear warm-up, then a half cosine that reaches zero after
    --lr-decay-steps and stays there; a resumed run continues the schedule where it stopped."""
    import math

    kw = dict(data="synthetic", batch_size=1, learning_rate=1e-3, warmup_steps=2, lr_schedule="cosine", lr_decay_steps=4)
    Trainer(tiny_settings(tmp_path, max_steps=3, **kw), quiet=True).train()
    Trainer(tiny_settings(tmp_path, max_steps=8, **kw), resume=True, quiet=True).train()
    rates = [r["lr"] for r in RunFolder(tmp_path).read_log("train")]
    # the logged rate is the one the next step will use (after the scheduler stepped)
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * min(1.0, (k - 2) / 4))) if k >= 2 else 1e-3 * (k + 1) / 2
                for k in range(1, 9)]
    assert rates == pytest.approx(expected, abs=1e-12)
    assert rates[-3:] == pytest.approx([0.0, 0.0, 0.0], abs=1e-12) and rates[3] == pytest.approx(5e-4)  # halfway down


def test_export_loads_in_the_pipeline_and_generates(resumed_runs, tmp_path):
    from PIL import Image

    from mvdpp.pipelines import MVDiffusionPPPipeline

    _, split, _, _ = resumed_runs
    export = tmp_path / "export"
    assert main(["train", "--stage", "unet-v-mixed", "--output", str(split), "--export", str(export), "--export-only"]) == 0
    weights = list(export.rglob("*.safetensors"))
    assert {w.parent.name for w in weights} == {"unet", "vae", "image_encoder"}
    from safetensors import safe_open

    for w in weights:
        with safe_open(str(w), "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys())
    assert json.loads((export / STATE_FILE).read_text())["step"] == 4
    pipe = MVDiffusionPPPipeline.from_pretrained(export, dtype=torch.float32)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    image = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
    image.paste((200, 40, 40, 255), (16, 16, 48, 48))
    out = pipe([image], num_inference_steps=2, view_ids=[0, 9], output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 64, 64, 4) and out.images.dtype.name == "uint8"


def test_cli_init_from_export_stops_at_max_minutes_and_exports(resumed_runs, tmp_path):
    """--init-from the previous stage's run; a tiny --max-minutes stops cleanly with a checkpoint."""
    _, split, _, _ = resumed_runs
    run, export = tmp_path / "run", tmp_path / "export"
    code = main(["train", "--stage", "unet-v-single", "--init-from", str(split), "--output", str(run), "--device", "cpu",
                 "--batch-size", "1", "--max-minutes", "0.0001", "--sample-every", "0", "--export", str(export)])
    assert code == 0
    stop = RunFolder(run).read_log("stop")[-1]
    assert stop["stopped_by"] == "max_minutes"
    latest = RunFolder(run).latest_checkpoint()
    assert latest is not None and (latest / "pipeline" / "model_index.json").is_file()
    # A different stage starts its own step count at 0.
    assert json.loads((latest / STATE_FILE).read_text())["stage"] == "unet-v-single"
    assert (export / "model_index.json").is_file()


@pytest.mark.parametrize("position, data, expected", [(12, "cache-latents", 15), (12, "cache", 15), (10, "cache-latents", 10),
                                                      (12, "procedural", 12)])
def test_init_from_export_starts_cached_data_at_the_next_epoch(tmp_path, tiny_checkpoint, position, data, expected):
    """Continuing from an export with the object cache skips the rest of a part-used cache epoch
    (it would be rendered in full for a few steps); other data continues where it stopped."""
    import shutil

    export = tmp_path / "export"
    shutil.copytree(tiny_checkpoint, export)
    (export / STATE_FILE).write_text(json.dumps({"stage": "unet-v-mixed", "step": position, "samples_seen": 3 * position,
                                                 "data_position": position}))
    trainer = Trainer(tiny_settings(tmp_path / "run", init_from=str(export), cache_refresh_steps=5), data=data, quiet=True)
    trainer.setup()
    assert trainer.state.data_position == expected
    assert trainer.state.step == position and trainer.state.warmup_origin == position  # the step count is untouched


def test_next_epoch_start_counts_global_batches_of_all_processes():
    from mvdpp.training.object_cache import next_epoch_start

    assert [next_epoch_start(g, 375) for g in (0, 1, 375, 14990)] == [0, 375, 375, 15000]
    # two processes: epoch e holds global batches [2 * 375 * e, 2 * 375 * (e + 1))
    assert next_epoch_start(751, 375, world_size=2) == 1500


def test_sample_sheet_and_periodic_checkpoints(tmp_path):
    trainer = Trainer(tiny_settings(tmp_path, "unet-eps-single", max_steps=2, sample_every=2, checkpoint_every=1,
                                    keep_checkpoints=1), data="synthetic", quiet=True)
    trainer.train()
    sheets = list((tmp_path / "samples").glob("step-*.png"))
    assert [p.name for p in sheets] == ["step-0000002.png"]
    from PIL import Image

    with Image.open(sheets[0]) as sheet:
        assert sheet.size == (8 * 64, 3 * 64)  # condition | generated | ground truth rows
    assert [p.name for p in RunFolder(tmp_path).list_checkpoints()] == ["step-0000002"]  # pruned to 1


def test_user_errors_are_clear(tmp_path):
    with pytest.raises(MVDPPError, match="Unknown training stage"):
        tiny_settings(tmp_path, "unet-x").validate()
    with pytest.raises(MVDPPError, match="does not exist"):
        tiny_settings(tmp_path, init_from=str(tmp_path / "missing")).validate()
    with pytest.raises(MVDPPError, match="neither a pipeline folder nor a training run"):
        Trainer(tiny_settings(tmp_path, init_from=str(tmp_path)), quiet=True).setup()
    with pytest.raises(MVDPPError, match="unknown model preset"):
        tiny_settings(tmp_path, preset="huge").validate()
    with pytest.raises(MVDPPError, match="vae-decoder fine-tunes the decoder of a trained VAE"):
        Trainer(tiny_settings(tmp_path / "fresh", "vae-decoder"), quiet=True).setup()
    # Refused at once, not after minutes of rendering and a crash inside torch.compile.
    with pytest.raises(MVDPPError, match="--compile does not work with stage unet-v-mixed"):
        tiny_settings(tmp_path, "unet-v-mixed", compile=True).validate()
    tiny_settings(tmp_path, "unet-v-single", compile=True).validate()


def test_resume_refuses_another_stage(resumed_runs):
    _, split, _, _ = resumed_runs
    with pytest.raises(MVDPPError, match="trains stage unet-v-mixed"):
        Trainer(tiny_settings(split, "unet-v-single", max_steps=5), resume=True, quiet=True).setup()


def test_ema_follows_the_weights_with_warmup():
    from mvdpp.training.ema import EMA

    layer = torch.nn.Linear(2, 2)
    ema = EMA({"m": layer}, decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update({"m": layer})  # first decay min(0.9, 1/10) = 0.1: mostly the new weights
    target = torch.nn.Linear(2, 2)
    ema.copy_to({"m": target})
    assert torch.allclose(target.weight, torch.full((2, 2), 1.0), atol=0.2)
    assert ema.current_decay() == pytest.approx(2 / 11)


def test_device_cache_draws_stream_like_batches_and_resumes(tmp_path):
    """--data cache: objects rendered into device memory per epoch; batches drawn there have the
    stream's layout, new objects arrive each epoch, and a resume across an epoch boundary trains
    on the same objects as the uninterrupted run."""
    kw = dict(data="cache", cache_objects=2, cache_refresh_steps=2, log_objects=True)
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(tiny_settings(straight, max_steps=3, **kw), quiet=True).train()
    Trainer(tiny_settings(split, max_steps=1, **kw), quiet=True).train()
    Trainer(tiny_settings(split, max_steps=3, **kw), resume=True, quiet=True).train()
    assert len(logged_losses(split)) == 3 and logged_objects(straight) == logged_objects(split)
    # Rendered data: equal up to the renderer's one-grey-level context dependence (see above).
    assert logged_losses(split) == pytest.approx(logged_losses(straight), rel=1e-3)
    seeds = [entry[0] for entry in logged_objects(straight)]
    epoch0, epoch1 = set(seeds[:2]), {seeds[2]}
    assert not epoch0 & epoch1  # step 2 starts epoch 1: new objects

    from mvdpp.training.object_cache import DeviceObjectCache

    cache = DeviceObjectCache(2, 10, 64, seed=1, rank=0, world_size=1, device=torch.device("cpu"), log=lambda *a: None)
    batch = cache.batch(0, 3, "sparse")
    assert batch["gen"].shape == (3, 8, 4, 64, 64) and batch["cond"].shape[2:] == (4, 64, 64)
    assert batch["gen"].min() >= -1 and batch["gen"].max() <= 1 and batch["gen"][:, :, 3].max() == 1  # objects visible
    assert (batch["gen_view_ids"].diff(dim=1) > 0).all()  # 8 distinct rig views, ascending like the stream


def test_carry_packs_a_folder_into_small_parts_and_back(tmp_path):
    from mvdpp.training.carry import pack, unpack

    folder = tmp_path / "export" / "unet"
    folder.mkdir(parents=True)
    payload = bytes(range(256)) * 4000  # ~1 MB
    (folder / "weights.bin").write_bytes(payload)
    parts = pack(tmp_path / "export", tmp_path / "out", part_bytes=300_000)
    assert len(parts) == 4 and all(p.stat().st_size <= 300_000 for p in parts)
    restored = unpack(tmp_path / "out", tmp_path / "restored")
    assert (restored / "unet" / "weights.bin").read_bytes() == payload
    parts[1].unlink()
    with pytest.raises(SystemExit, match="3 of 4 parts"):
        unpack(tmp_path / "out", tmp_path / "again")


def test_latent_cache_matches_the_image_path(tmp_path):
    """--data cache-latents stores what the UNet objective would compute from the images, and its
    shortcut around the VAE builds the same condition encoding as the shared encode_condition."""
    from mvdpp.models import encode_rgba
    from mvdpp.pipelines import encode_condition, null_condition_latent
    from mvdpp.training.object_cache import DeviceObjectCache
    from mvdpp.training.objectives import condition_from_latents

    trainer = Trainer(tiny_settings(tmp_path, "unet-eps-single", data="cache-latents", cache_objects=2), quiet=True)
    trainer.setup()
    vae, encoder = trainer.pipe.vae, trainer.pipe.image_encoder
    quiet = dict(seed=3, rank=0, world_size=1, device=torch.device("cpu"), log=lambda *a: None)
    images = DeviceObjectCache(2, 10, 64, **quiet).batch(0, 2, "sparse")
    latents = DeviceObjectCache(2, 10, 64, vae=vae, **quiet).batch(0, 2, "sparse")
    assert "gen" not in latents and latents["gen_latents"].shape == (2, 8, 4, 8, 8)
    assert torch.equal(images["cond"], latents["cond"]) and torch.equal(images["gen_view_ids"], latents["gen_view_ids"])
    with torch.no_grad():
        expected_gen = encode_rgba(vae, images["gen"])
        expected = encode_condition(vae, encoder, images["cond"])
        shortcut = condition_from_latents(vae, encoder, latents["cond"], latents["cond_latents"], null_condition_latent(vae, 64))
    assert torch.allclose(latents["gen_latents"], expected_gen, atol=2e-3, rtol=1e-3)  # fp16 storage
    assert torch.allclose(shortcut.latents, expected.latents, atol=2e-3, rtol=1e-3)
    assert torch.equal(shortcut.tokens, expected.tokens) and torch.equal(shortcut.null_latent, expected.null_latent)

    loss, _ = trainer.train_step(next(trainer.batches()))
    assert torch.isfinite(loss)


def test_filling_the_cache_in_chunks_stores_every_object_at_its_place(monkeypatch):
    """A cache epoch rendered now is stored a chunk of objects at a time (one VAE call per chunk);
    with chunks of 2 over 3 objects (a full chunk and a remainder) every object lands where one
    at a time would put it."""
    from mvdpp.training import object_cache

    def filled(chunk):
        monkeypatch.setattr(object_cache, "STORE_CHUNK", chunk)
        cache = object_cache.DeviceObjectCache(3, 10, 64, seed=5, rank=0, world_size=1, device=torch.device("cpu"),
                                               log=lambda *a: None)
        cache.fill(0)
        return cache

    chunked, single = filled(2), filled(1)
    assert torch.equal(chunked.object_seed, single.object_seed) and len(set(chunked.object_seed.tolist())) == 3
    assert torch.equal(chunked.cond, single.cond) and torch.equal(chunked.rig, single.rig)
    assert all(chunked.rig[i].float().std() > 0 for i in range(3))  # every slot was written


def test_export_never_replaces_a_folder_that_is_not_a_pipeline(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(MVDPPError, match="not a pipeline folder"):
        tiny_settings(tmp_path / "run", export=str(precious)).validate()
    assert (precious / "notes.txt").read_text() == "keep me"


def test_cache_prefetch_renders_the_next_epoch_in_the_background(tmp_path):
    """With worker processes the next epoch is rendered while the current one trains; what it
    delivers is what rendering on demand delivers."""
    from mvdpp.training.object_cache import DeviceObjectCache, cache_batches

    quiet = dict(seed=5, rank=0, world_size=1, device=torch.device("cpu"))
    logs = []
    background = DeviceObjectCache(2, 1, 64, num_workers=1, log=logs.append, **quiet)
    on_demand = DeviceObjectCache(2, 1, 64, num_workers=0, log=lambda *a: None, **quiet)
    assert background.prefetch and not on_demand.prefetch
    batches = cache_batches(background, 2, "sparse", start=0)
    first, second = next(batches), next(batches)  # epoch 0 rendered now, epoch 1 prefetched
    assert [line.split(":")[1].split()[0] for line in logs] == ["rendered", "prefetched"]
    for got, want in ((first, on_demand.batch(0, 2, "sparse")), (second, on_demand.batch(1, 2, "sparse"))):
        assert torch.equal(got["object_seed"], want["object_seed"]) and torch.equal(got["gen_view_ids"], want["gen_view_ids"])
        assert (got["gen"] - want["gen"]).abs().max() <= 2 / 127.5  # renderer: a grey level at most
    batches.close()  # ends the run: the epoch-2 prefetch is cancelled
    assert background._pending is None


def test_a_unet_stage_revives_a_dead_view_embedding_and_calibrates_the_latent_scale(tmp_path):
    """Starting a UNet stage from a checkpoint with a paper-style zero view-embedding scale and a
    VAE whose latents are far from unit variance fixes both; --fold-input-conv removes the 1x1
    input bottleneck (and the trained UNet is the folded one)."""
    from mvdpp.models import encode_rgba
    from mvdpp.presets import build_pipeline

    from mvdpp.presets import build_unet

    pipe = build_pipeline("tiny", seed=0)
    pipe.register_modules(unet=build_unet("tiny", reduce_input=True))  # the paper's 1x1 input conv
    with torch.no_grad():
        pipe.unet.view_embedding_scale.zero_()
    pipe.vae.register_to_config(scaling_factor=0.01)
    source = tmp_path / "old"
    pipe.save_pretrained(source, safe_serialization=True)

    trainer = Trainer(tiny_settings(tmp_path / "run", "unet-eps-single", init_from=str(source), fold_input_conv=True,
                                    global_attention_levels=[0]), quiet=True)
    trainer.setup()
    unet, vae = trainer.pipe.unet, trainer.pipe.vae
    assert not unet.config.reduce_input and trainer.unwrapped["unet"] is unet
    assert list(unet.config.global_attention_levels) == [0]
    assert {name: p.across_views for name, p in unet.body.attn_processors.items() if ".attn1." in name} == {
        name: name.startswith("down_blocks.0") or name.startswith("up_blocks.1")
        for name in unet.body.attn_processors if ".attn1." in name}
    assert float(unet.view_embedding_scale.detach()) == 1.0 and 0.05 < float(unet.view_embedding.weight.detach().std()) < 0.2
    assert vae.config.scaling_factor != 0.01
    batch = next(trainer.batches())
    images = torch.cat([batch["cond"].flatten(0, 1), batch["gen"].flatten(0, 1)])
    with torch.no_grad():
        std = float(encode_rgba(vae, images.to(vae.device)).std())
    assert 0.6 < std < 1.5, std
    # A model that is already fine is left alone.
    factor = vae.config.scaling_factor
    trainer.export(tmp_path / "export")
    again = Trainer(tiny_settings(tmp_path / "run2", "unet-v-single", init_from=str(tmp_path / "export")), quiet=True)
    again.setup()
    assert again.pipe.vae.config.scaling_factor == pytest.approx(factor, rel=1e-3)
    assert list(again.pipe.unet.config.global_attention_levels) == [0]  # saved with the model
    with pytest.raises(MVDPPError, match="levels 0-1"):
        Trainer(tiny_settings(tmp_path / "run3", init_from=str(source), global_attention_levels=[2]), quiet=True).setup()


def test_running_out_of_gpu_memory_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """A batch too large for the GPU is a setting to change: the command says which, exits 2 and
    prints no traceback."""
    def out_of_memory(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 432.00 MiB.")

    monkeypatch.setattr(Trainer, "train", out_of_memory)
    rc = main(["train", "--stage", "unet-v-mixed", "--preset", "tiny", "--device", "cpu", "--output", str(tmp_path / "run"),
               "--batch-size", "256"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "The GPU ran out of memory while training unet-v-mixed at --batch-size 256" in err
    assert "hint: Lower --batch-size" in err and "--resume" in err
    assert "Traceback" not in err and "internal error" not in err


def test_zero_terminal_snr_trains_on_pure_noise_at_the_last_step_and_keeps_it_in_the_export(tmp_path):
    """--zero-terminal-snr: the objective noises with the rescaled schedule (t = 999 is pure
    noise, as sampling starts) and the exported sampler keeps it; epsilon stages refuse it."""
    export = tmp_path / "export"
    trainer = Trainer(tiny_settings(tmp_path / "run", "unet-v-single", max_steps=1, zero_terminal_snr=True,
                                    export=str(export)), data="synthetic", quiet=True)
    trainer.train()
    noise = trainer.objective.noise_scheduler
    assert noise.config.rescale_betas_zero_snr and float(noise.alphas_cumprod[-1]) == 0.0
    plain = Trainer(tiny_settings(tmp_path / "plain", "unet-v-single"), data="synthetic", quiet=True)
    plain.setup()
    assert float(plain.objective.noise_scheduler.alphas_cumprod[-1]) > 1e-3  # the old schedule leaves signal
    saved = json.loads((export / "scheduler" / "scheduler_config.json").read_text())
    assert saved["rescale_betas_zero_snr"] is True and saved["prediction_type"] == "v_prediction"
    with pytest.raises(MVDPPError, match="--zero-terminal-snr needs a v-prediction stage"):
        tiny_settings(tmp_path, "unet-eps-single", zero_terminal_snr=True).validate()
    assert main(["train", "--stage", "unet-eps-single", "--output", str(tmp_path / "x"), "--zero-terminal-snr"]) == 2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the side-stream path needs a CUDA device"))])
def test_latent_cache_encodes_the_next_epoch_in_the_background_without_touching_the_current_one(tmp_path, device):
    """With a VAE and worker processes the next epoch is rendered and encoded into a spare set of
    tensors (on CUDA on a stream of its own), swapped in when the epoch ends: its latents are what
    encoding on demand stores, and while the next-but-one epoch is encoded into the set just
    swapped out, the current epoch's batches stay as they were."""
    from mvdpp.training.object_cache import DeviceObjectCache, cache_batches

    trainer = Trainer(tiny_settings(tmp_path, "unet-eps-single", data="cache-latents", cache_objects=2), quiet=True)
    trainer.setup()
    quiet = dict(seed=7, rank=0, world_size=1, device=torch.device(device), vae=trainer.pipe.vae.to(device))
    logs = []
    background = DeviceObjectCache(2, 2, 64, num_workers=1, log=logs.append, **quiet)
    on_demand = DeviceObjectCache(2, 2, 64, num_workers=0, log=lambda *a: None, **quiet)
    assert background.encodes_in_background and not on_demand.encodes_in_background
    assert not DeviceObjectCache(2, 2, 64, num_workers=1, background_encode=False, **quiet).encodes_in_background
    batches = cache_batches(background, 2, "sparse", start=0)
    got = [next(batches) for _ in range(3)]  # epochs 0, 0, 1 (epoch 1 encoded in the background)
    assert [line.split(":")[1].split()[0] for line in logs] == ["rendered", "prefetched"]
    assert "in the background" in logs[1]
    background._pending.thread.join()  # epoch 2 is now encoded into the set epoch 0 used
    assert background._pending.value is not None
    got.append(next(batches))  # still epoch 1
    for index, batch in enumerate(got):
        want = on_demand.batch(index, 2, "sparse")
        assert torch.equal(batch["object_seed"], want["object_seed"]) and torch.equal(batch["gen_view_ids"], want["gen_view_ids"])
        # renders in a worker and in this process differ by a grey level at most
        assert torch.allclose(batch["gen_latents"], want["gen_latents"], atol=0.05)
        assert torch.allclose(batch["cond_latents"], want["cond_latents"], atol=0.05)
    assert not torch.equal(got[0]["gen_latents"], got[2]["gen_latents"])  # a new epoch did arrive
    assert torch.equal(background.object_seed, on_demand.object_seed)
    batches.close()


def test_one_gl_context_cache_renders_what_per_worker_contexts_render(tmp_path):
    """render_contexts="one": workers make the meshes, one process renders them; the cache holds
    the same objects and views as with a GL context per worker, and a failing object source
    surfaces as a clear error from the render process, not a hang."""
    from mvdpp.errors import BAD_INPUT, MVDPPError
    from mvdpp.training.object_cache import DeviceObjectCache, cache_batches

    quiet = dict(seed=5, rank=0, world_size=1, device=torch.device("cpu"), log=lambda *a: None, prefetch=False)
    one = DeviceObjectCache(3, 10, 32, num_workers=2, render_contexts="one", **quiet)
    per_worker = DeviceObjectCache(3, 10, 32, num_workers=2, **quiet)
    one.fill(0)
    per_worker.fill(0)
    assert torch.equal(one.object_seed, per_worker.object_seed)
    assert (one.rig.int() - per_worker.rig.int()).abs().max() <= 2 and (one.cond.int() - per_worker.cond.int()).abs().max() <= 2
    assert one.rig.float().std() > 10  # objects were drawn, not an empty buffer
    # prefetched in the background (the path whose last objects a too-early exit once lost)
    background = DeviceObjectCache(2, 1, 32, num_workers=1, render_contexts="one", **{**quiet, "prefetch": True})
    batches = cache_batches(background, 2, "sparse", start=0)
    for index in range(3):  # epochs 0, 1, 2
        got = next(batches)
        want = DeviceObjectCache(2, 1, 32, num_workers=0, **quiet).batch(index, 2, "sparse")
        assert torch.equal(got["object_seed"], want["object_seed"])
        assert (got["gen"] - want["gen"]).abs().max() <= 2 / 127.5
    batches.close()

    broken = tmp_path / "assets"
    broken.mkdir()
    (broken / "broken.obj").write_text("this is not a mesh\n")
    failing = DeviceObjectCache(1, 10, 32, num_workers=1, render_contexts="one", assets=str(broken), **quiet)
    with pytest.raises(MVDPPError) as info:
        failing.fill(0)
    assert info.value.code == BAD_INPUT and "render process" in info.value.message and "could be loaded" in info.value.message
    with pytest.raises(MVDPPError) as info:
        DeviceObjectCache(1, 10, 32, render_contexts="two", **quiet)
    assert info.value.code == BAD_INPUT


def _stream_failing_after(batches: int, error: Exception):
    """Patch Trainer.batches: the real stream for ``batches`` batches, then ``error``."""
    real = Trainer.batches

    def failing(self):
        stream = real(self)
        for _ in range(batches):
            yield next(stream)
        raise error
    return failing


def test_a_data_stream_failure_keeps_the_steps_trained_and_says_what_to_do(tmp_path, monkeypatch, capsys):
    """A render worker refusing its framebuffer mid-run (the GPU's memory shared with the step):
    the steps done are checkpointed and exported before the command ends with a clear error,
    and --resume goes on from them."""
    from mvdpp.data.render import RenderTargetError

    # What a DataLoader rebuilds in the main process: the worker's traceback as the message.
    worker = RenderTargetError("Caught RenderTargetError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
                               '  File "render.py", line 425, in _target\nmvdpp.data.render.RenderTargetError: OpenGL could not '
                               "make a 64x512 px render target (the framebuffer is not complete (UNSUPPORTED)); the GPU's "
                               "memory is most likely full")
    monkeypatch.setattr(Trainer, "batches", _stream_failing_after(3, worker))
    run, export = tmp_path / "run", tmp_path / "export"
    args = ["train", "--stage", "unet-eps-single", "--preset", "tiny", "--device", "cpu", "--output", str(run), "--data", "synthetic",
            "--batch-size", "1", "--max-steps", "6", "--sample-every", "0", "--checkpoint-every", "0", "--log-every", "1",
            "--export", str(export)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "The training data stream failed after step 3: OpenGL could not make a 64x512 px render target" in err
    assert "hint: The renderer shares the GPU with the training step" in err and "--batch-size" in err
    assert f"The 3 steps trained are kept in {run / 'checkpoints' / 'step-0000003'} and exported to {export}" in err
    assert "rerun the same command with --resume" in err and "Traceback" not in err and "internal error" not in err
    assert json.loads((export / STATE_FILE).read_text())["step"] == 3
    assert RunFolder(run).read_log("error")[-1]["step"] == 3
    monkeypatch.undo()
    assert main(args + ["--resume"]) == 0
    assert [r["step"] for r in RunFolder(run).read_log("train")] == [1, 2, 3, 4, 5, 6]


def test_a_data_stream_bug_still_saves_the_steps_and_reports_the_bug(tmp_path, monkeypatch, capsys):
    """Any other failure of the stream is a bug (internal error, exit 1), but the finished steps
    are checkpointed first; a failure before the first step saves nothing."""
    monkeypatch.setattr(Trainer, "batches", _stream_failing_after(2, ValueError("bad cache index")))
    run = tmp_path / "run"
    args = ["train", "--stage", "unet-eps-single", "--preset", "tiny", "--device", "cpu", "--output", str(run), "--data", "synthetic",
            "--batch-size", "1", "--max-steps", "6", "--sample-every", "0", "--checkpoint-every", "0"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "internal error: ValueError: bad cache index" in captured.err
    assert "The training data stream failed after step 2: bad cache index. The 2 steps trained are kept in" in captured.out
    assert [p.name for p in RunFolder(run).list_checkpoints()] == ["step-0000002"]
    monkeypatch.setattr(Trainer, "batches", _stream_failing_after(0, ValueError("bad cache index")))
    fresh = tmp_path / "fresh"
    assert main(args[:8] + [str(fresh)] + args[9:]) == 1
    assert RunFolder(fresh).list_checkpoints() == []
