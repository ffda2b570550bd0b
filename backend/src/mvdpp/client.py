"""A client for ``mvdpp serve``: start the backend as a subprocess and talk JSON lines to it.

Standard library only: the Blender extension imports this module from the bundled wheel, where
neither torch nor numpy is available. Usage from a UI that polls (never blocks)::

    backend = BackendProcess(python_executable, serve_args=["--device", "auto"])
    backend.start()                                   # returns at once; state "starting"
    ...
    for event in backend.poll_events():               # e.g. from a Blender timer, main thread
        ...                                           # ready / progress / result / error ...
    request_id = backend.send({"type": "generate", "images": [...], "out": "/results/x"})
    backend.stop()

and from a script (blocking)::

    with BackendProcess(sys.executable) as backend:
        backend.wait_ready(timeout=300)
        result = backend.generate(["/a.png"], "/results/x", steps=30)   # the "result" event

Threads: one reads the server's stdout (parsing each line into a queue), one keeps the last
lines of its stderr. They never touch anything but this object, so a caller inside Blender may
use the client from its main thread while they run. When the server dies without having said
goodbye, ``poll_events`` yields one synthetic error event (code ``backend_exited``) that carries
the end of its stderr: a crashed or killed server is an error, never a hang.
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable

from . import protocol

#: Client-side error codes (in addition to those of mvdpp.errors).
BACKEND_EXITED = "backend_exited"
BACKEND_OUTPUT = "backend_output"

STOPPED, STARTING, READY, BUSY = "stopped", "starting", "ready", "busy"

#: Events after which no more events about that request will come.
TERMINAL_EVENTS = (protocol.RESULT, protocol.CANCELLED, protocol.ERROR, protocol.PONG, protocol.BYE)
#: Requests that start a job (the server is busy until the job's terminal event).
JOB_REQUESTS = (protocol.GENERATE, protocol.RECONSTRUCT)

STDERR_TAIL_LINES = 40


class BackendError(RuntimeError):
    """A request failed (an ``error`` event) or the backend cannot be used.

    ``code``, ``message`` and ``hint`` are those of the error event.
    """

    def __init__(self, code: str, message: str, hint: str = "", event: dict | None = None):
        super().__init__(f"{message} (hint: {hint})" if hint else message)
        self.code = code
        self.message = message
        self.hint = hint
        self.event = event


class BackendProcess:
    """One ``python -m mvdpp serve`` subprocess and the events it has sent.

    ``python_executable``: the interpreter of the environment where mvdpp and torch live.
    ``serve_args``: extra arguments for ``mvdpp serve`` (``--checkpoint``, ``--device`` ...).
    ``env``: the child's environment (default: this process's), ``cwd`` its working folder.
    ``command``: a complete command line to run instead of ``python -m mvdpp serve ...``
    (for wrappers and tests; it must speak the same protocol).
    """

    def __init__(
        self,
        python_executable: str,
        serve_args: Iterable[str] = (),
        env: dict | None = None,
        cwd: str | None = None,
        stderr_tail_lines: int = STDERR_TAIL_LINES,
        command: Iterable[str] | None = None,
    ):
        self._command = None if command is None else [str(a) for a in command]
        self.python_executable = str(python_executable)
        self.serve_args = [str(a) for a in serve_args]
        self.env = env
        self.cwd = cwd
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._backlog: collections.deque = collections.deque()  # events wait_for set aside
        self._stderr_tail: collections.deque = collections.deque(maxlen=stderr_tail_lines)
        self._lock = threading.Lock()  # guards state, job id and the stderr tail
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count(1)
        self._state = STOPPED
        self._job_id = None  # id of the job the server is running, as far as we know
        self._stopping = False  # we asked it to stop: its exit is not an error
        self._said_bye = False
        self.ready_event: dict | None = None  # the server's "ready" event (device, checkpoint ...)
        self.returncode: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def command(self) -> list[str]:
        if self._command is not None:
            return list(self._command)
        return [self.python_executable, "-m", "mvdpp", "serve", *self.serve_args]

    def start(self) -> None:
        """Spawn the server and return at once (state "starting" until its "ready" event)."""
        if self.is_running():
            return
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        kwargs = {}
        if sys.platform == "win32":  # no console window popping up next to Blender
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self._reset()
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=self.cwd,
                bufsize=0,
                **kwargs,
            )
        except OSError as exc:
            self._state = STOPPED
            raise BackendError(
                BACKEND_EXITED,
                f"Cannot start the backend with {self.python_executable}: {exc.strerror or exc}",
                "Check the Python interpreter path of the MVD++ backend in the add-on preferences.",
            ) from exc
        self._state = STARTING
        # Each reader gets this process and this queue: after a restart, readers of the old
        # process cannot touch the new one's events or state.
        proc, events = self._proc, self._events
        stderr_reader = threading.Thread(target=self._read_stderr, args=(proc,), name="mvdpp-client-stderr", daemon=True)
        stdout_reader = threading.Thread(target=self._read_stdout, args=(proc, events, stderr_reader),
                                         name="mvdpp-client-stdout", daemon=True)
        self._threads = [stderr_reader, stdout_reader]
        for thread in self._threads:
            thread.start()

    def _reset(self) -> None:
        self._events = queue.Queue()
        self._backlog.clear()
        self._stderr_tail.clear()
        self._job_id = None
        self._stopping = False
        self._said_bye = False
        self.ready_event = None
        self.returncode = None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def state(self) -> str:
        """"stopped", "starting" (until the server says it is ready), "ready" or "busy"."""
        with self._lock:
            return self._state

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr (its log)."""
        with self._lock:
            return "\n".join(self._stderr_tail)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to shut down; terminate it, then kill it, if it does not within ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.poll() is None:
            try:
                self._write({"type": protocol.SHUTDOWN, "id": f"c{next(self._ids)}"})
            except BackendError:
                pass
            for signal_method in (None, proc.terminate, proc.kill):
                if signal_method is not None:
                    try:
                        signal_method()
                    except OSError:
                        pass
                try:
                    proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for thread in self._threads:
            thread.join(timeout=2.0)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self.returncode = proc.poll()
        with self._lock:
            self._state = STOPPED

    def __enter__(self) -> "BackendProcess":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __del__(self):  # a forgotten client must not leave an orphan server behind
        try:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing sensible left to do
            pass

    # ------------------------------------------------------------------ requests and events

    def send(self, request: dict) -> str:
        """Send one request (an ``id`` is added when missing) and return its id.

        Raises BackendError when the server is not running.
        """
        request = dict(request)
        if request.get("id") is None:
            request["id"] = f"c{next(self._ids)}"
        request["id"] = str(request["id"])
        self._write(request)
        if request.get("type") in JOB_REQUESTS:
            with self._lock:
                if self._job_id is None and self._state in (READY, STARTING):
                    self._job_id = request["id"]  # queued behind startup when still starting
                    if self._state == READY:
                        self._state = BUSY
        return request["id"]

    def _write(self, message: dict) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            raise BackendError(BACKEND_EXITED, "The MVD++ backend is not running.", "Start the backend first.")
        data = protocol.encode(message).encode("utf-8")
        try:
            with self._write_lock:
                proc.stdin.write(data)
                proc.stdin.flush()
        except (OSError, ValueError) as exc:  # broken pipe: the server just died
            raise BackendError(BACKEND_EXITED, "The MVD++ backend stopped accepting requests.", "Restart the backend.") from exc

    def poll_events(self) -> list[dict]:
        """All events that arrived since the last call, without blocking."""
        events = list(self._backlog)
        self._backlog.clear()
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait_for(self, request_id: str, timeout: float | None = None, on_event: Callable[[dict], None] | None = None) -> dict:
        """Block until the terminal event of ``request_id`` (result, cancelled, error, pong, bye).

        ``on_event`` sees every event of that request on the way (progress ...). Events about
        other requests are kept for the next ``poll_events``. A server that dies ends the wait
        with its ``backend_exited`` error event. Raises TimeoutError after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        kept = []
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no answer to request {request_id} within {timeout} s")
                try:
                    event = self._backlog.popleft() if self._backlog else self._events.get(timeout=remaining)
                except queue.Empty:
                    continue
                if event.get("id") == request_id:
                    if on_event is not None:
                        on_event(event)
                    if event.get("type") in TERMINAL_EVENTS:
                        return event
                elif event.get("code") == BACKEND_EXITED:
                    kept.append(event)
                    return event
                else:
                    kept.append(event)
        finally:
            self._backlog.extend(kept)

    def wait_ready(self, timeout: float | None = None) -> dict:
        """Block until the server is ready; returns its ready event. Raises BackendError if it dies."""
        deadline = None if timeout is None else time.monotonic() + timeout
        kept = []
        try:
            while self.ready_event is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"the backend was not ready within {timeout} s")
                try:
                    event = self._events.get(timeout=remaining)
                except queue.Empty:
                    continue
                if event.get("type") == protocol.ERROR and (event.get("id") is None or event.get("code") == BACKEND_EXITED):
                    kept.append(event)
                    raise BackendError(event.get("code", ""), event.get("message", ""), event.get("hint", ""), event)
                if event.get("type") != protocol.READY:
                    kept.append(event)
            return self.ready_event
        finally:
            self._backlog.extend(kept)

    def request(self, request: dict, timeout: float | None = None, on_event: Callable[[dict], None] | None = None) -> dict:
        """Send a request and wait for its terminal event; an error event raises BackendError."""
        event = self.wait_for(self.send(request), timeout=timeout, on_event=on_event)
        if event.get("type") == protocol.ERROR:
            raise BackendError(event.get("code", ""), event.get("message", ""), event.get("hint", ""), event)
        return event

    def ping(self, timeout: float | None = 10.0) -> dict:
        return self.request({"type": protocol.PING}, timeout=timeout)

    def generate(
        self,
        images: list[str],
        out: str,
        timeout: float | None = None,
        on_progress: Callable[[dict], None] | None = None,
        **settings,
    ) -> dict:
        """Run one generate job and return its ``result`` event (``folder`` is the result folder).

        ``settings``: the optional request keys (steps, guidance, seed, scheduler, mesh,
        overwrite). Raises BackendError for an error event, JobCancelledError when cancelled.
        """
        request = {"type": protocol.GENERATE, "images": [str(p) for p in images], "out": str(out), **settings}

        def forward(event: dict) -> None:
            if on_progress is not None and event.get("type") == protocol.PROGRESS:
                on_progress(event)

        event = self.request(request, timeout=timeout, on_event=forward)
        if event.get("type") == protocol.CANCELLED:
            raise BackendError("cancelled", "The job was cancelled.", "", event)
        return event

    def cancel(self) -> str:
        """Ask the server to cancel its running job (its terminal event will be "cancelled")."""
        return self.send({"type": protocol.CANCEL})

    # ------------------------------------------------------------------ reader threads

    def _read_stdout(self, proc: subprocess.Popen, events: queue.Queue, stderr_reader: threading.Thread) -> None:
        for raw in iter(proc.stdout.readline, b""):
            if not raw.strip():
                continue
            try:
                event = protocol.decode(raw)
            except protocol.ProtocolError as exc:
                # The server guarantees protocol lines only; say so rather than drop it silently.
                text = raw.decode("utf-8", "replace").strip()[:200]
                event = protocol.error_event(None, BACKEND_OUTPUT, f"The backend wrote an unreadable line ({exc}): {text}",
                                             "This is a bug in the backend; please report it with the backend log.")
            if proc is self._proc:
                self._track_state(event)
            events.put(event)
        returncode = proc.wait()
        stderr_reader.join(timeout=2.0)  # so that the tail includes the server's last words
        if proc is not self._proc:
            return
        with self._lock:
            self._state = STOPPED
            self.returncode = returncode
            job_id, expected = self._job_id, self._stopping or self._said_bye
            self._job_id = None
        if not expected:
            tail = self.stderr_tail()
            message = f"The MVD++ backend exited unexpectedly (exit code {returncode})."
            last = _last_meaningful_line(tail)
            if last:
                message += f" Last log line: {last}"
            event = protocol.error_event(
                job_id, BACKEND_EXITED, message,
                "See the backend log; restart the backend to try again. If it was killed for lack of "
                "memory, try low-VRAM mode or fewer input images.",
            )
            event["stderr_tail"] = tail
            event["returncode"] = returncode
            events.put(event)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        tail = self._stderr_tail
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            # progress bars redraw with carriage returns: keep only the latest state of such a line
            line = line.rsplit("\r", 1)[-1]
            with self._lock:
                if proc is self._proc:
                    tail.append(line)

    def _track_state(self, event: dict) -> None:
        kind = event.get("type")
        with self._lock:
            if kind == protocol.READY:
                self.ready_event = event
                self._state = BUSY if self._job_id is not None else READY
            elif kind == protocol.BYE:
                self._said_bye = True
            elif kind in (protocol.RESULT, protocol.CANCELLED, protocol.ERROR):
                if self._job_id is not None and event.get("id") == self._job_id:
                    self._job_id = None
                    if self._state == BUSY:
                        self._state = READY
            elif kind == protocol.PROGRESS and self._state == READY:
                self._state = BUSY  # a job the client did not start itself (another caller)
                self._job_id = event.get("id")


def _last_meaningful_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:300]
    return ""
