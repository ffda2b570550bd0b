"""Preset sizes (the paper's UNet, the embedded model's size budget) and `mvdpp bench paper`."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from mvdpp.cli import main  # noqa: E402
from mvdpp.errors import MVDPPError  # noqa: E402
from mvdpp.presets import PRESETS, build_image_encoder, build_unet, build_vae, get_preset  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parameter_count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def test_paper_preset_is_the_sd2_inpainting_sized_unet():
    with torch.device("meta"):  # shapes only: no 3.5 GB of random weights
        unet = build_unet("paper")
    assert 860e6 < parameter_count(unet) < 870e6
    assert unet.config.sample_size == 64 and unet.config.latent_channels == 4
    assert unet.input_reduce.in_channels == 9 and unet.input_reduce.out_channels == 4
    assert unet.config.global_attention_levels is None  # global attention at every level, as in the paper
    heads_dim = [w // h for w, h in zip(unet.config.block_out_channels, unet.config.attention_head_dim)]
    assert heads_dim == [64, 64, 64, 64]
    assert PRESETS["paper"]["resolution"] == 512


def test_embedded_preset_fits_40_mb_in_fp16_at_256_px():
    with torch.device("meta"):
        total = parameter_count(build_unet("embedded"), build_vae("embedded"), build_image_encoder("embedded"))
    assert total * 2 <= 40e6, f"{total / 1e6:.1f}M parameters"
    assert get_preset("embedded")["resolution"] == 256


def test_shipped_embedded_checkpoint_samples_with_the_presets_sampler():
    """The shipped folder's model_index.json and scheduler config name the same class (diffusers
    loads the class of model_index.json with the config of scheduler/), the embedded preset's."""
    from mvdpp.paths import default_checkpoint
    from mvdpp.pipelines import MVDiffusionPPPipeline
    from mvdpp.pipelines.schedulers import scheduler_name

    folder = default_checkpoint()
    if folder is None:
        pytest.skip("no embedded model in this build")
    index = json.loads((folder / "model_index.json").read_text())
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert index["scheduler"][1] == config["_class_name"]
    scheduler = MVDiffusionPPPipeline.from_pretrained(folder).scheduler
    assert scheduler_name(scheduler) == get_preset("embedded")["scheduler"] == "ddpm"
    assert scheduler.config.prediction_type == "v_prediction"


def test_every_preset_resolution_matches_its_latents():
    for name, preset in PRESETS.items():
        factor = 2 ** (len(preset["vae"]["block_out_channels"]) - 1)
        assert preset["unet"]["sample_size"] * factor == preset["resolution"], name


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(MVDPPError, match="preset"):
        get_preset("huge")


def test_bench_paper_on_cpu_with_the_tiny_preset(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "paper", "--preset", "tiny", "--device", "cpu", "--views", "4", "--steps", "1", "--warmup", "0",
                 "--train-views", "2", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["preset"] == "tiny" and result["guidance_batch"] == 2 and result["generation_views"] == 4
    for key in ("step_s", "step_tflop", "achieved_tflops", "matmul_tflops", "train_step_s", "peak_memory_gib"):
        assert result[key] > 0, key
    assert result["achieved_tflops"] == pytest.approx(result["step_tflop"] / result["step_s"], rel=0.01)
    assert "achieved_tflops" in capsys.readouterr().out


def test_bench_paper_pipeline_mode(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "paper", "--preset", "tiny", "--device", "cpu", "--pipeline", "--views", "2", "--steps", "2",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["views"] == 2 and result["wall_s"] > 0 and result["sampling_s"] + result["decode_s"] == pytest.approx(result["wall_s"], abs=0.05)


def test_bench_paper_without_cuda_says_so(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "paper", "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_presets_and_bench_modules_import_without_torch():
    import subprocess
    import sys

    from conftest import subprocess_env

    code = "import sys, mvdpp.presets, mvdpp.pipelines.benchmark_paper as b; b.HELP; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr


def test_flop_counter_counts_global_attention_on_the_cpu():
    """Global attention over V views costs V times the per-view attention; the count must show it."""
    from mvdpp.pipelines.benchmark_paper import _random_inputs, flop_counter

    counts = {}
    for levels in ((), None):
        unet = build_unet("tiny", global_attention_levels=levels).eval()
        inputs = _random_inputs(unet, 1, 1, 7, torch.device("cpu"), torch.float32)
        with torch.no_grad(), flop_counter() as counter:
            unet(**inputs.as_kwargs())
        counts[levels] = counter.get_total_flops()
    # tiny: 8x8 and 4x4 latents, 8 views -> attention matmuls 8x larger; the rest unchanged
    assert counts[None] > counts[()] * 1.05


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_consistent_pipeline(name):
    from mvdpp.models import image_embedding_dim
    from mvdpp.presets import build_pipeline

    pipe = build_pipeline(name, device="meta")  # shapes only
    assert pipe.resolution == PRESETS[name]["resolution"]
    assert image_embedding_dim(pipe.image_encoder) == pipe.unet.config.cross_attention_dim
    assert pipe.vae.config.in_channels == pipe.vae.config.out_channels == 4
    assert pipe.scheduler_name == PRESETS[name]["scheduler"]


def test_attention_backend_is_applied_to_every_layer():
    """"math" computes the same attention as PyTorch's own choice; "cudnn" has no CPU kernel, so
    a forward that fails proves the chosen backend reaches every layer's attention call."""
    from mvdpp.pipelines.benchmark_paper import _random_inputs

    unet = build_unet("tiny").eval()
    inputs = _random_inputs(unet, 1, 1, 3, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        reference = unet(**inputs.as_kwargs()).sample
        unet.set_attention_backend("math")
        assert {p.backend for p in unet.body.attn_processors.values()} == {"math"}
        torch.testing.assert_close(unet(**inputs.as_kwargs()).sample, reference, atol=1e-5, rtol=1e-4)
        if not torch.cuda.is_available():
            unet.set_attention_backend("cudnn")
            with pytest.raises(RuntimeError):
                unet(**inputs.as_kwargs())
        unet.set_attention_backend("auto")
        assert {p.backend for p in unet.body.attn_processors.values()} == {None}


def test_unknown_attention_backend_is_refused():
    unet = build_unet("tiny")
    with pytest.raises(ValueError, match="attention backend"):
        unet.set_attention_backend("fastest")


def test_bench_paper_attention_sweep_lists_every_attention_shape(tmp_path, capsys):
    """The tiny preset, 1 condition + 2 generation views, guidance as a batch of 2 objects:
    self-attention joins each object's 3 views at both levels, cross-attention runs per view."""
    out = tmp_path / "bench.json"
    assert main(["bench", "paper", "--preset", "tiny", "--device", "cpu", "--views", "2", "--steps", "1", "--warmup", "0",
                 "--attention-sweep", "--attention-backend", "math", "--channels-last", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    shapes = {tuple(row["shape"]): row for row in result["attention_sweep"]}
    # level 0: 8x8 latents, 1 head of 32; level 1: 4x4, 2 heads of 32 (the tiny preset)
    assert shapes[(2, 1, 3 * 64, 3 * 64, 32)]["calls_per_step"] == 3  # 1 down + 2 up layers
    assert shapes[(2, 2, 3 * 16, 3 * 16, 32)]["calls_per_step"] == 4  # 1 down + 1 mid + 2 up
    assert shapes[(6, 1, 64, 1, 32)]["calls_per_step"] == 3  # cross-attention, per view
    for row in shapes.values():
        assert row["math"]["ms"] > 0 and row["auto"]["ms"] > 0
        assert row["tflop"] == pytest.approx(4 * math.prod(row["shape"]) / 1e12, rel=1e-3)
        if not torch.cuda.is_available():
            assert row["cudnn"] is None  # no CPU kernel: reported, not a crash
    assert result["attention_backend"] == "math" and result["channels_last"] is True
    assert "per backend" in capsys.readouterr().out


def test_bench_paper_pipeline_times_the_mesh_stage(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "paper", "--preset", "tiny", "--device", "cpu", "--pipeline", "--views", "2", "--steps", "1",
                 "--mesh", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mesh_faces"] > 1000 and result["mesh_s"] > 0
    # the step's FLOP rate beside the matmul rate of the same run (issue 9's point 1)
    assert result["step_tflop"] > 0 and result["matmul_tflops"] > 0
    assert result["achieved_tflops"] == pytest.approx(result["step_tflop"] / result["step_s"], rel=0.01)
    assert result["fraction_of_matmul"] == pytest.approx(result["achieved_tflops"] / result["matmul_tflops"], rel=0.01)
    step_only = tmp_path / "step.json"
    assert main(["bench", "paper", "--preset", "tiny", "--device", "cpu", "--views", "2", "--steps", "1", "--warmup", "0",
                 "--json", str(step_only)]) == 0
    assert result["step_tflop"] == json.loads(step_only.read_text())["step_tflop"]  # the same guided step counted
    assert result["job_s"] == pytest.approx(result["wall_s"] + result["mesh_s"], abs=0.02)


def test_bench_paper_with_a_backend_that_cannot_run_the_model_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("cuDNN attention runs on this machine")
    code = main(["bench", "paper", "--preset", "tiny", "--device", "cpu", "--views", "2", "--steps", "1", "--warmup", "0",
                 "--attention-backend", "cudnn"])
    err = capsys.readouterr().err
    assert code == 2 and "'cudnn' attention backend has no kernel" in err and "--attention-backend auto" in err
    assert "Traceback" not in err
    assert main(["bench", "paper", "--preset", "tiny", "--device", "cpu", "--attention-backend", "fastest"]) == 2
    assert "unknown attention backend" in capsys.readouterr().err
