"""The client and the server mechanics, over a real subprocess and real pipes.

The server here is ``mvdpp.service.server.serve`` with a small job handler written in the test
(counting steps with short sleeps) instead of the model, so these tests exercise the protocol
loop, busy/cancel/shutdown, stdout protection and the client's crash handling in about a
second each without importing torch. The same mechanics with the real model are covered by
test_service_generate.py.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from conftest import subprocess_env
from mvdpp import protocol
from mvdpp.client import BACKEND_EXITED, BackendError, BackendProcess

# A server whose generate job counts `steps` steps of `step_s` seconds, and which writes stray
# output to stdout the ways libraries do (print, C-level write to fd 1, a child process).
FAKE_SERVER = r"""
import os, subprocess, sys, time
from mvdpp.errors import JobCancelled, MVDPPError
from mvdpp.service.server import serve

def generate(request, progress, should_cancel):
    print("stray print from a library")
    os.write(1, b"stray C-level write to fd 1\n")
    subprocess.run([sys.executable, "-c", "print('stray output of a child process')"])
    if request.get("fail"):
        raise MVDPPError("bad_input", "cannot read /x.png: not an image", "use a PNG")
    steps = int(request.get("steps", 3))
    for step in range(1, steps + 1):
        time.sleep(float(request.get("step_s", 0.02)))
        if should_cancel():
            raise JobCancelled()
        progress("denoise", step, steps)
    return {"folder": request["out"]}

def load():
    print("loading chatter on stdout")
    if os.environ.get("FAKE_LOAD_FAIL"):
        raise MVDPPError("checkpoint", "no model here", "pass --checkpoint")
    return {"generate": generate}, {"device": "cpu", "checkpoint": "fake"}

sys.exit(serve(load))
"""


def start_fake(**env) -> BackendProcess:
    backend = BackendProcess(sys.executable, env=subprocess_env(**env), command=[sys.executable, "-c", FAKE_SERVER])
    backend.start()
    return backend


@pytest.fixture
def backend():
    backend = start_fake()
    try:
        backend.wait_ready(timeout=30)
        yield backend
    finally:
        backend.stop(timeout=5)


def collect_until(backend: BackendProcess, predicate, timeout: float = 10.0) -> list[dict]:
    """Poll (non-blocking, like the extension's timer) until an event satisfies predicate."""
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = backend.poll_events()
        events.extend(new)
        if any(predicate(e) for e in new):
            return events
        time.sleep(0.01)
    raise AssertionError(f"no matching event within {timeout} s; got {events}")


def test_ready_ping_and_state(backend):
    assert backend.ready_event["protocol"] == protocol.PROTOCOL_VERSION
    assert backend.ready_event["device"] == "cpu"
    assert backend.state == "ready"
    pong = backend.ping()
    assert pong["type"] == "pong" and pong["busy"] is False


def test_start_returns_at_once_and_poll_never_blocks():
    backend = start_fake()
    try:
        assert backend.state == "starting"
        started = time.monotonic()
        backend.poll_events()
        assert time.monotonic() - started < 0.05
        events = collect_until(backend, lambda e: e["type"] == "ready")
        assert [e["type"] for e in events] == ["ready"]  # the loading chatter went to stderr
        assert backend.state == "ready"
    finally:
        backend.stop()
    assert backend.state == "stopped"
    assert [e["type"] for e in backend.poll_events()] == ["bye"]  # a requested stop is no error
    # the same client can start the server again
    backend.start()
    try:
        assert backend.wait_ready(timeout=30)["type"] == "ready" and backend.ping()["type"] == "pong"
    finally:
        backend.stop()


def test_generate_round_trip_with_progress_and_stray_output(backend, tmp_path):
    progress = []
    result = backend.generate(["/a.png"], str(tmp_path / "out"), steps=4, step_s=0.08, on_progress=progress.append)
    assert result["type"] == "result" and result["folder"] == str(tmp_path / "out")
    assert [(p["stage"], p["step"], p["total"]) for p in progress] == [("denoise", i, 4) for i in range(1, 5)]
    assert all(p["elapsed_s"] >= 0 for p in progress)
    assert progress[-1]["eta_s"] == 0.0 and progress[1]["eta_s"] is not None
    assert backend.state == "ready"
    # the stray output of the job and its child process is in the log, not in the protocol
    time.sleep(0.2)
    log = backend.stderr_tail()
    assert "stray print from a library" in log and "stray C-level write" in log and "stray output of a child" in log
    assert backend.poll_events() == []


def test_progress_events_are_throttled_but_the_last_step_always_arrives(backend, tmp_path):
    progress = []
    backend.generate(["/a.png"], str(tmp_path / "out"), steps=400, step_s=0.001, on_progress=progress.append, timeout=30)
    assert 2 <= len(progress) < 100
    assert (progress[0]["step"], progress[-1]["step"]) == (1, 400)


def test_state_is_busy_while_a_job_runs_and_second_job_gets_busy_error(backend, tmp_path):
    job = backend.send({"type": "generate", "images": ["/a.png"], "out": str(tmp_path / "a"), "steps": 50, "step_s": 0.02})
    assert backend.state == "busy"
    second = backend.send({"type": "generate", "images": ["/a.png"], "out": str(tmp_path / "b")})
    error = backend.wait_for(second, timeout=10)
    assert error["type"] == "error" and error["code"] == "busy" and job in error["message"]
    assert backend.state == "busy"  # the first job still runs
    assert backend.wait_for(job, timeout=20)["type"] == "result"
    assert backend.state == "ready"
    # the job slot is free as soon as the job's last event is out: back-to-back jobs never see "busy"
    for name in "cdefg":
        assert backend.generate(["/a.png"], str(tmp_path / name), steps=1, timeout=10)["type"] == "result"


def test_cancel_stops_the_job_quickly(backend, tmp_path):
    job = backend.send({"type": "generate", "images": ["/a.png"], "out": str(tmp_path / "a"), "steps": 1000, "step_s": 0.01})
    collect_until(backend, lambda e: e["type"] == "progress")
    asked = time.monotonic()
    backend.cancel()
    event = backend.wait_for(job, timeout=10)
    assert event["type"] == "cancelled"
    assert time.monotonic() - asked < 2.0
    assert backend.state == "ready"
    assert backend.ping()["busy"] is False


def test_cancel_without_a_job_is_an_error_for_that_request(backend):
    event = backend.wait_for(backend.cancel(), timeout=10)
    assert event["type"] == "error" and event["code"] == "not_running"


def test_job_errors_are_error_events_and_the_server_keeps_serving(backend, tmp_path):
    with pytest.raises(BackendError) as info:
        backend.generate(["/x.png"], str(tmp_path / "a"), fail=True)
    assert info.value.code == "bad_input" and "/x.png" in info.value.message and info.value.hint
    assert backend.ping()["type"] == "pong"


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"this is not json\n", "not JSON"),
        (b"[1, 2, 3]\n", "JSON object"),
        (b'{"id": "9"}\n', "'type'"),
        (b'{"type": 5}\n', "'type'"),
        (b"\xff\xfe\n", "UTF-8"),
        (b'{"type": "ping", "id": {"a": 1}}\n', "'id'"),
    ],
)
def test_malformed_lines_get_an_error_and_the_server_keeps_running(backend, line, expected):
    backend._proc.stdin.write(line)
    backend._proc.stdin.flush()
    events = collect_until(backend, lambda e: e["type"] == "error")
    error = [e for e in events if e["type"] == "error"][0]
    assert error["code"] == "bad_request" and expected in error["message"] and error["hint"]
    assert backend.ping()["type"] == "pong"


def test_unknown_request_type_and_over_long_line(backend):
    event = backend.wait_for(backend.send({"type": "dance"}), timeout=10)
    assert event["code"] == "bad_request" and "dance" in event["message"] and "generate" in event["hint"]
    backend._proc.stdin.write(b"x" * (1 << 20 + 1) + b"\n")  # 2 MiB of junk on one line
    backend._proc.stdin.flush()
    events = collect_until(backend, lambda e: e["type"] == "error")
    assert "longer than" in [e for e in events if e["type"] == "error"][0]["message"]
    assert backend.ping()["type"] == "pong"


def test_killed_server_is_an_error_not_a_hang(backend, tmp_path):
    job = backend.send({"type": "generate", "images": ["/a.png"], "out": str(tmp_path / "a"), "steps": 1000, "step_s": 0.01})
    collect_until(backend, lambda e: e["type"] == "progress")
    os.kill(backend.pid, signal.SIGKILL)
    event = backend.wait_for(job, timeout=10)  # must not wait for a result that never comes
    assert event["type"] == "error" and event["code"] == BACKEND_EXITED
    assert "exited unexpectedly" in event["message"] and event["hint"]
    assert "stray print from a library" in event["stderr_tail"]
    assert backend.state == "stopped"
    with pytest.raises(BackendError):
        backend.send({"type": "ping"})


def test_terminated_server_cancels_its_job_first(backend, tmp_path):
    job = backend.send({"type": "generate", "images": ["/a.png"], "out": str(tmp_path / "a"), "steps": 1000, "step_s": 0.01})
    collect_until(backend, lambda e: e["type"] == "progress")
    os.kill(backend.pid, signal.SIGTERM)
    assert backend.wait_for(job, timeout=10)["type"] == "cancelled"  # the job wound down (cleanup ran)
    exited = collect_until(backend, lambda e: e.get("code") == BACKEND_EXITED)[-1]
    assert exited["returncode"] == 143 and "terminated" in exited["stderr_tail"]


def test_a_server_that_cannot_load_reports_why():
    backend = start_fake(FAKE_LOAD_FAIL="1")
    try:
        with pytest.raises(BackendError) as info:
            backend.wait_ready(timeout=30)
        assert info.value.code == "checkpoint" and info.value.hint == "pass --checkpoint"
        events = collect_until(backend, lambda e: e.get("code") == BACKEND_EXITED)
        assert events[-1]["returncode"] == 2
    finally:
        backend.stop()


def test_shutdown_during_a_job_cancels_it_and_says_bye(backend, tmp_path):
    job = backend.send({"type": "generate", "images": ["/a.png"], "out": str(tmp_path / "a"), "steps": 1000, "step_s": 0.01})
    collect_until(backend, lambda e: e["type"] == "progress")
    bye = backend.send({"type": "shutdown"})
    assert backend.wait_for(job, timeout=10)["type"] == "cancelled"
    assert backend.wait_for(bye, timeout=10)["type"] == "bye"
    backend._proc.wait(timeout=10)
    time.sleep(0.1)
    assert not any(e.get("code") == BACKEND_EXITED for e in backend.poll_events())  # a clean exit is no error
    assert backend.returncode == 0


def test_stop_kills_a_server_that_ignores_shutdown():
    backend = BackendProcess(sys.executable, command=[sys.executable, "-c", "import time; time.sleep(60)"])
    backend.start()
    started = time.monotonic()
    backend.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    assert backend.state == "stopped" and backend.returncode is not None


def test_the_client_needs_only_the_standard_library():
    # The Blender extension imports it from the bundled wheel: no numpy, no torch there.
    import subprocess

    code = ("import sys, mvdpp.client; "
            "heavy = sorted({'numpy', 'torch', 'PIL', 'diffusers', 'bpy'} & set(sys.modules)); print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_missing_interpreter_is_a_clear_error(tmp_path):
    backend = BackendProcess(str(tmp_path / "no-python"))
    with pytest.raises(BackendError) as info:
        backend.start()
    assert info.value.code == BACKEND_EXITED and "no-python" in info.value.message
    assert backend.state == "stopped"
