"""The distributed path on the CPU: two processes (torchrun, gloo) train one run together."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from conftest import subprocess_env

pytest.importorskip("torch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_train_on_different_objects_and_resume_on_one(tmp_path):
    run = tmp_path / "run"
    common = ["--stage", "unet-eps-single", "--preset", "tiny", "--output", str(run), "--device", "cpu", "--batch-size", "2",
              "--log-every", "1", "--sample-every", "0", "--log-objects"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(free_port()), "-m", "mvdpp", "train", *common, "--max-steps", "2"]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=240, env=subprocess_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout

    seen = {}
    for rank in (0, 1):
        lines = [json.loads(line) for line in (run / f"objects-rank{rank}.jsonl").read_text().splitlines()]
        assert [entry["step"] for entry in lines] == [0, 1]
        seen[rank] = {seed for entry in lines for seed in entry["object_seed"]}
        assert len(seen[rank]) == 2  # one object per process per step, none repeated
    assert not seen[0] & seen[1], "the two processes trained on the same objects"

    # A checkpoint written by the 2-process run resumes in a single process, continuing the
    # stream after the last global batch the pair consumed (no object seen twice).
    single = [sys.executable, "-m", "mvdpp", "train", *common, "--max-steps", "3", "--resume"]
    proc = subprocess.run(single, capture_output=True, text=True, timeout=240, env=subprocess_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "1 process(es)" in proc.stdout
    after = [json.loads(line) for line in (run / "objects-rank0.jsonl").read_text().splitlines()][2:]
    assert [entry["step"] for entry in after] == [2]
    assert not set(after[0]["object_seed"]) & (seen[0] | seen[1])
