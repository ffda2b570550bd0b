"""`mvdpp bench train` / `mvdpp bench sample` with the tiny preset on the CPU."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from mvdpp.cli import main  # noqa: E402


def test_bench_train_reports_throughput_flops_memory_and_profile(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["bench", "train", "--tiny", "--steps", "2", "--warmup", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("samples/s", "model FLOPs / step", "matmul rate measured now", "peak process RSS", "profile by component"):
        assert label in printed
    figures = json.loads(out.read_text())
    assert figures["samples_per_second"] > 0 and figures["flops_per_step"] > 0 and figures["matmul_tflops"] > 0
    assert figures["achieved_tflops"] == pytest.approx(figures["flops_per_step"] / figures["seconds_per_step"] / 1e12)
    # The profile splits the step into the components the issue names.
    assert {"attention", "convolution", "vae", "optimizer", "data"} <= set(figures["breakdown_ms"])
    assert all(ms >= 0 for ms in figures["breakdown_ms"].values())


def test_bench_sample_reports_step_time_and_flops(tmp_path, capsys):
    out = tmp_path / "sample.json"
    assert main(["bench", "sample", "--tiny", "--views", "8", "--no-profile", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "denoising step" in printed and "TFLOP/s" in printed
    figures = json.loads(out.read_text())
    assert figures["seconds_per_step"] > 0 and figures["views_per_second"] == pytest.approx(8 / figures["seconds_per_step"])
    assert figures["flops_per_step"] > 0 and figures["guidance"] is True


def test_flop_count_includes_attention_forward_and_backward():
    """FlopCounterMode's table lacks the CPU's fused attention kernels; ours adds them, so the
    CPU count matches the formula (4 B H L^2 d forward, 2.5x that backward)."""
    import torch

    from mvdpp.training.profiling import count_flops

    q = torch.randn(2, 4, 128, 32, requires_grad=True)

    def attention_step():
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()

    assert count_flops(attention_step) == int(4 * 2 * 4 * 128 * 128 * 32 * 3.5)


def test_running_out_of_memory_is_a_clear_error_not_an_internal_one(monkeypatch, capsys):
    """A batch too large for the GPU is the user's setting, not a bug: exit 2 with a hint."""
    import torch

    from mvdpp.training import benchmark_train

    def out_of_memory(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 432.00 MiB.\nmore detail")

    monkeypatch.setattr(benchmark_train, "run", out_of_memory)
    assert main(["bench", "train", "--tiny"]) == 2
    err = capsys.readouterr().err
    assert "ran out of memory (CUDA out of memory. Tried to allocate 432.00 MiB.)" in err
    assert "--batch-size" in err and "internal error" not in err and "more detail" not in err


@pytest.mark.parametrize("kind", ["render", "render-apart", "render-one-context"])
def test_background_render_load_delivers_objects_and_stops(tmp_path, kind):
    """The render loads are a real prefetch renderer: objects arrive while they run, and stop()
    ends them (no thread or gathering process left behind)."""
    import time

    from mvdpp.training.background_load import BackgroundLoad

    load = BackgroundLoad(kind, workers=1, resolution=64).start()
    load.wait_ready(timeout=300)
    time.sleep(3)
    rate = load.objects_per_second()
    load.stop()
    assert rate is not None and rate > 0
    assert not load._runner.is_alive()
    assert not any(process.is_alive() for process in load._processes)
    import multiprocessing

    assert not [p for p in multiprocessing.active_children() if p.name == "object-cache-renderer"]
    if kind == "render":
        with pytest.raises(ValueError, match="unknown background load"):
            BackgroundLoad("gpu", 1)


def test_cpu_load_spins_its_processes_until_stopped():
    from mvdpp.training.background_load import BackgroundLoad

    load = BackgroundLoad("cpu", workers=2).start()
    load.wait_ready(timeout=5)
    assert len(load._processes) == 2 and all(process.is_alive() for process in load._processes)
    assert load.objects_per_second() is None  # it renders nothing
    load.stop()
    assert not any(process.is_alive() for process in load._processes)


def test_bench_train_times_the_steps_under_a_cpu_load(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["bench", "train", "--tiny", "--steps", "2", "--warmup", "1", "--no-profile", "--background-load", "cpu",
                 "--background-workers", "1", "--json", str(out)]) == 0
    assert "background load       cpu x 1 processes" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["background_load"] == "cpu" and figures["background_workers"] == 1
    assert figures["samples_per_second"] > 0
