"""Render worker processes start with one CPU thread each (mvdpp.data.workers): a thread pool
per core in every worker starved the training step beside them on the GPU machine."""

import multiprocessing
import os

import torch

from mvdpp.data.workers import THREAD_VARIABLES, RenderLoader, children_threads


class ThreadSettingsOfWorkers(torch.utils.data.IterableDataset):
    """Yields, from each worker, what its environment says about thread pools."""

    def __iter__(self):
        yield {name: os.environ.get(name) for name in THREAD_VARIABLES}


def _report_environment(queue) -> None:
    queue.put({name: os.environ.get(name) for name in THREAD_VARIABLES})


def test_processes_started_inside_the_block_get_the_limit_and_the_caller_keeps_its_own(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # a user's own setting
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with children_threads(1):
        child = context.Process(target=_report_environment, args=(queue,))
        child.start()
    seen = queue.get(timeout=60)
    child.join(60)
    assert seen == {name: "1" for name in THREAD_VARIABLES}
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "OPENBLAS_NUM_THREADS" not in os.environ


def test_render_loader_workers_are_single_threaded_unless_asked_otherwise(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    dataset = ThreadSettingsOfWorkers()
    limited = list(RenderLoader(dataset, num_workers=2))
    assert limited == [{name: "1" for name in THREAD_VARIABLES}] * 2
    # None keeps the environment the workers inherit (the libraries' defaults).
    default = list(RenderLoader(dataset, num_workers=1, threads_per_worker=None))
    assert default[0]["OMP_NUM_THREADS"] == "3" and default[0]["OPENBLAS_NUM_THREADS"] is None
    # In-process loading changes nothing in this process.
    assert list(RenderLoader(dataset, num_workers=0))[0]["OMP_NUM_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "3" and "OPENBLAS_NUM_THREADS" not in os.environ


def test_train_and_bench_accept_thread_counts_and_refuse_negative_ones(capsys):
    import argparse

    import pytest

    from mvdpp.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_render_worker_threads(parser)
    assert train_cli.render_worker_threads(parser.parse_args([])) == 1
    assert train_cli.render_worker_threads(parser.parse_args(["--render-worker-threads", "0"])) is None
    assert train_cli.render_worker_threads(parser.parse_args(["--render-worker-threads", "4"])) == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["--render-worker-threads", "-2"])
    assert "not a thread count" in capsys.readouterr().err
