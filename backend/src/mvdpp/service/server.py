"""``mvdpp serve``: the JSON-lines server the Blender extension talks to (docs/protocol.md).

The main thread reads requests from stdin; jobs (generate, reconstruct) run one at a time in a
worker thread so that ping, cancel and shutdown are answered while a job runs. Nothing but
protocol lines ever reaches stdout: at start-up the real stdout is duplicated to a private file
descriptor for the protocol and file descriptor 1 is pointed at stderr, so prints, warnings and
progress bars of any library (C code included) end up in the log instead of corrupting the
protocol. The server opens no network port.

This module is standard library only; what a job does is given by ``handlers`` (see
``mvdpp.service.job.ModelJobs``), which is where torch comes in.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from typing import BinaryIO, Callable

from .. import __version__, errors, protocol
from ..errors import JobCancelled, MVDPPError
from .progress import ProgressClock

#: Longest request line accepted (a generate request with 10 long paths is a few kB).
MAX_LINE_BYTES = 1 << 20
#: How long shutdown waits for a cancelled job to wind down before leaving anyway.
SHUTDOWN_JOB_WAIT_S = 10.0
NOT_RUNNING = "not_running"
#: Progress events of one stage at most this often (the first and last step always go out), so a
#: stage with thousands of small steps cannot flood the client.
PROGRESS_INTERVAL_S = 0.05

#: A job handler: (request, progress(stage, step, total, **extra), should_cancel()) -> result fields
#: (e.g. {"folder": "..."}). It raises MVDPPError for users' errors and JobCancelled when
#: should_cancel() turned true.
JobHandler = Callable[[dict, Callable[[str, int, int], None], Callable[[], bool]], dict]


def take_over_stdout() -> BinaryIO:
    """Reserve the process's stdout for protocol lines; everything else written there goes to stderr.

    Works at the file-descriptor level, so output from C extensions and child processes that
    inherit fd 1 is redirected as well. Returns the protocol stream (binary, unbuffered).
    """
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    protocol_fd = os.dup(1)  # not inheritable: child processes cannot write to the protocol
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


def log(message: str) -> None:
    print(f"mvdpp serve: {message}", file=sys.stderr, flush=True)


class ProtocolWriter:
    """Writes events as protocol lines; safe to call from the reader and the worker thread."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        data = protocol.encode(event).encode("utf-8")
        with self._lock:
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # the client went away; the reader will see EOF and the server will stop


def read_lines(stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES):
    """Yield the lines of ``stream``; an over-long line is yielded as None (and skipped)."""
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:  # drop the rest of the over-long line
                rest = stream.readline(max_bytes)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


class Server:
    """Dispatches requests; runs at most one job at a time in a worker thread."""

    def __init__(self, handlers: dict[str, JobHandler], emit: Callable[[dict], None], ready_info: dict | None = None):
        self.handlers = handlers
        self.emit = emit
        self.ready_info = dict(ready_info or {})
        self._lock = threading.Lock()
        self._job_thread: threading.Thread | None = None
        self._job_id = None
        self._job_running = False
        self._cancel = threading.Event()
        self.stopping = False

    # ------------------------------------------------------------------ main loop

    def run(self, stdin: BinaryIO) -> int:
        self.emit({"type": protocol.READY, "protocol": protocol.PROTOCOL_VERSION, "version": __version__, **self.ready_info})
        for line in read_lines(stdin):
            if line is None:
                self.emit(protocol.error_event(None, errors.BAD_REQUEST, f"A request line is longer than {MAX_LINE_BYTES} bytes.",
                                               "Send one JSON object per line."))
                continue
            if not line.strip():
                continue
            self.handle_line(line)
            if self.stopping:
                return 0
        # stdin closed: the client is gone; stop whatever runs and leave
        log("stdin closed, stopping")
        self.stop_job()
        return 0

    def handle_line(self, line: bytes) -> None:
        try:
            request = protocol.decode(line)
        except protocol.ProtocolError as exc:
            self.emit(protocol.error_event(None, errors.BAD_REQUEST, f"Malformed request: {exc}.",
                                           "Send one JSON object per line with a string 'type' (see docs/protocol.md)."))
            return
        request_id = request.get("id")
        if request_id is not None and not isinstance(request_id, (str, int)):
            self.emit(protocol.error_event(None, errors.BAD_REQUEST, "A request 'id' must be a string or an integer.",
                                           "Choose a string id for every request."))
            return
        kind = request["type"]
        try:
            if kind == protocol.PING:
                self.emit({"type": protocol.PONG, "id": request_id, "busy": self.busy})
            elif kind == protocol.CANCEL:
                self.cancel(request_id)
            elif kind == protocol.SHUTDOWN:
                self.stop_job()
                self.emit({"type": protocol.BYE, "id": request_id})
                self.stopping = True
            elif kind in self.handlers:
                self.start_job(request)
            else:
                known = ", ".join(t for t in protocol.REQUEST_TYPES if t in self.handlers or t in (protocol.PING, protocol.CANCEL, protocol.SHUTDOWN))
                self.emit(protocol.error_event(request_id, errors.BAD_REQUEST, f"Unknown request type {kind!r}.",
                                               f"Known request types: {known}."))
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            log("internal error while handling a request:\n" + traceback.format_exc())
            self.emit(protocol.error_event(request_id, errors.INTERNAL, f"Internal error: {type(exc).__name__}: {exc}",
                                           "This is a bug; the backend log has the details."))

    # ------------------------------------------------------------------ jobs

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._job_running

    def start_job(self, request: dict) -> None:
        request_id = request.get("id")
        with self._lock:
            if self._job_running:
                self.emit(protocol.error_event(request_id, errors.BUSY,
                                               f"The backend is busy with request {self._job_id!r}; one job runs at a time.",
                                               "Wait for the running job to finish, or cancel it first."))
                return
            self._cancel.clear()
            self._job_id = request_id
            self._job_running = True
            self._job_thread = threading.Thread(target=self._run_job, args=(request,), name="mvdpp-job", daemon=True)
            self._job_thread.start()

    def _run_job(self, request: dict) -> None:
        request_id = request.get("id")
        handler = self.handlers[request["type"]]
        clock = ProgressClock()

        last_sent = {"stage": None, "at": 0.0}

        def progress(stage: str, step: int, total: int, **extra) -> None:
            # ``extra``: fields a client needs at once (e.g. "condition_image"); never throttled
            if self._cancel.is_set():
                raise JobCancelled()
            update = clock.update(stage, step, total)
            now = time.monotonic()
            if not extra and stage == last_sent["stage"] and step < total and now - last_sent["at"] < PROGRESS_INTERVAL_S:
                return
            last_sent.update(stage=stage, at=now)
            self.emit({"type": protocol.PROGRESS, "id": request_id, **update.as_event_fields(), **extra})

        try:
            # A job that returns has committed its result: a cancel arriving after that is too late.
            fields = handler(request, progress, self._cancel.is_set)
            final = {"type": protocol.RESULT, "id": request_id, **fields, "elapsed_s": round(clock.elapsed(), 3)}
        except JobCancelled:
            final = {"type": protocol.CANCELLED, "id": request_id}
        except MVDPPError as exc:
            final = protocol.error_event(request_id, exc.code, exc.message, exc.hint)
        except MemoryError:
            final = protocol.error_event(request_id, errors.OUT_OF_MEMORY, "The backend ran out of memory.",
                                         "Close other programs, use fewer input images or steps, or enable low-VRAM mode.")
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            log(f"job {request_id!r} failed:\n" + traceback.format_exc())
            final = protocol.error_event(request_id, errors.INTERNAL, f"Internal error: {type(exc).__name__}: {exc}",
                                         "This is a bug; the backend log has the details.")
        # Free the job slot before telling the client: a request sent right after the job's last
        # event must not be refused as busy.
        with self._lock:
            self._job_id = None
            self._job_running = False
        self.emit(final)

    def cancel(self, request_id) -> None:
        with self._lock:
            running = self._job_running
        if running:
            self._cancel.set()  # the job answers with a "cancelled" event under its own id
        else:
            self.emit(protocol.error_event(request_id, NOT_RUNNING, "No job is running; there is nothing to cancel.", ""))

    def stop_job(self) -> None:
        with self._lock:
            thread = self._job_thread
        if thread is not None and thread.is_alive():
            self._cancel.set()
            thread.join(SHUTDOWN_JOB_WAIT_S)
            if thread.is_alive():
                log("the running job did not stop in time; leaving anyway")


class Terminated(Exception):
    """SIGTERM arrived: stop the job cleanly (no partial result folder), then exit."""


def _raise_terminated(signum, frame):
    raise Terminated()


def serve(handlers_factory: Callable[[], tuple[dict[str, JobHandler], dict]], stdin: BinaryIO | None = None) -> int:
    """Run a server on this process's stdin/stdout until shutdown or end of input.

    ``handlers_factory`` loads whatever the jobs need (the model) and returns the handlers and
    the extra fields of the ready event. It runs after stdout is taken over, so loading output
    cannot corrupt the protocol; an MVDPPError from it is reported as an error event (id null)
    and the server exits with status 2. SIGTERM cancels a running job (its temporary folder is
    removed) before the process exits with status 143.
    """
    emit = ProtocolWriter(take_over_stdout())
    stdin = stdin if stdin is not None else sys.stdin.buffer
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    server = None
    try:
        try:
            handlers, ready_info = handlers_factory()
        except MVDPPError as exc:
            log(f"cannot start: {exc}")
            emit(protocol.error_event(None, exc.code, exc.message, exc.hint))
            return 2
        server = Server(handlers, emit, ready_info)
        return server.run(stdin)
    except Terminated:
        log("terminated; stopping the running job")
        if server is not None:
            server.stop_job()
        return 128 + signal.SIGTERM
