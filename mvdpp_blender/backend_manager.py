"""The backend: where its environment lives, installing it, and the one warm backend process.

The model runs in ``mvdpp serve``, a subprocess of Blender spoken to in JSON lines through
``mvdpp.client.BackendProcess`` (standard library only, non-blocking). Everything here is driven
from Blender's main thread: ``session.poll()`` is called by a timer (UI), by the Generate
operator's modal loop, or by ``api.generate``'s blocking loop; it never waits.

The installer runs pip in a worker thread that only touches its own fields (never bpy); the
preferences panel reads them when it redraws.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import bpy

from .preferences import ADDON_ID, get_preferences

INSTALL_HINT = (
    "Install it in Edit > Preferences > Add-ons > MVD++ Image to 3D > Install Backend, "
    "or choose an existing Python interpreter that has the mvdpp package"
)
#: How long a cancelled job may take to acknowledge before its process is stopped outright.
CANCEL_GRACE_S = 15.0
#: Where Windows gets CUDA builds of PyTorch (PyPI's are CPU-only there).
WINDOWS_TORCH_INDEX = "https://download.pytorch.org/whl/cu124"
#: How long after the backend process died its exit event may take to arrive.
EXIT_EVENT_GRACE_S = 3.0


class BackendUnavailable(Exception):
    """The backend cannot run; ``message`` says why and ``hint`` what to do."""

    def __init__(self, message: str, hint: str = INSTALL_HINT, code: str = "backend_unavailable"):
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


# --- where things live -------------------------------------------------------------------------


def user_dir() -> Path:
    """This extension's writable folder (kept across upgrades); the venv and results go here."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, create=True))
    except (ValueError, RuntimeError):  # imported outside an extension repository (development)
        path = Path(bpy.utils.user_resource("SCRIPTS", path="mvdpp_blender_data", create=True))
        return path


def managed_venv_dir() -> Path:
    return user_dir() / "backend-venv"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def managed_python() -> Path:
    return venv_python(managed_venv_dir())


def install_marker() -> Path:
    """Written last by a successful install: a venv without it is half-installed."""
    return managed_venv_dir() / "mvdpp-installed.txt"


def managed_backend_installed() -> bool:
    return managed_python().is_file() and install_marker().is_file()


def results_dir(prefs=None) -> Path:
    folder = getattr(prefs, "results_folder", "") if prefs is not None else ""
    path = Path(bpy.path.abspath(folder)) if folder else user_dir() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_wheel() -> Path | None:
    """The backend wheel shipped inside this extension (the same one Blender installed)."""
    wheels = sorted((Path(__file__).resolve().parent / "wheels").glob("mvdpp-*.whl"))
    return wheels[-1] if wheels else None


def resolve_interpreter(prefs) -> str:
    """The Python executable that runs the backend; raises BackendUnavailable with the fix."""
    if prefs is not None and prefs.backend_source == "CUSTOM":
        if not prefs.custom_python:
            raise BackendUnavailable("No backend Python interpreter is set")
        path = Path(bpy.path.abspath(prefs.custom_python))
        if not path.is_file():
            raise BackendUnavailable(f"The backend interpreter {path} does not exist")
        if not os.access(path, os.X_OK):
            raise BackendUnavailable(f"The backend interpreter {path} is not executable")
        return str(path)
    python = managed_python()
    if not python.is_file():
        raise BackendUnavailable("The MVD++ backend is not installed")
    if not install_marker().is_file():
        raise BackendUnavailable("The MVD++ backend is not completely installed (the last install failed or was interrupted)")
    return str(python)


def serve_arguments(prefs) -> list[str]:
    """Arguments after ``mvdpp serve``: checkpoint, device, memory mode."""
    args = []
    if prefs is not None and prefs.checkpoint:
        args += ["--checkpoint", bpy.path.abspath(prefs.checkpoint)]
    args += ["--device", getattr(prefs, "device", "auto") if prefs is not None else "auto"]
    if prefs is not None and prefs.low_vram:
        args.append("--low-vram")
    return args


# --- installing the managed environment ----------------------------------------------------------


class Installer:
    """Creates the managed venv and pip-installs the bundled wheel (with torch, diffusers, ...)."""

    def __init__(self):
        self.running = False
        self.status_line = ""
        self.error = ""
        self.hint = ""
        self.succeeded = False
        self.log_tail: deque[str] = deque(maxlen=200)
        self._thread: threading.Thread | None = None

    @property
    def log_path(self) -> Path:
        return user_dir() / "install.log"

    def start(self, extra_pip_args: str = "") -> None:
        """Start installing in a worker thread; raises BackendUnavailable when it cannot start."""
        if self.running:
            raise BackendUnavailable("The backend is already being installed", hint="Wait for it to finish")
        pip_args = shlex.split(extra_pip_args or "")
        if sys.platform == "win32" and not _only_index_args(pip_args):
            # PyPI's Windows PyTorch wheels are CPU-only; PyTorch's own index has the CUDA builds
            pip_args += ["--extra-index-url", WINDOWS_TORCH_INDEX]
        offline = "--no-index" in pip_args
        if not bpy.app.online_access and not offline:
            raise BackendUnavailable(
                "Installing the backend downloads PyTorch and diffusers, but Blender's online access is off",
                hint="Allow it in Preferences > System > Network > Allow Online Access, or install offline with "
                "extra pip arguments '--no-index --find-links <folder of wheels>'",
                code="offline",
            )
        wheel = bundled_wheel()
        if wheel is None:
            raise BackendUnavailable("This build of the extension has no backend wheel",
                                     hint="Reinstall the extension from its release zip")
        self.running, self.succeeded = True, False
        self.error = self.hint = ""
        self.log_tail.clear()
        venv = managed_venv_dir()
        install_marker().unlink(missing_ok=True)  # until this install has been checked
        self._thread = threading.Thread(target=self._run, args=(venv, wheel, pip_args), daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the install ends (scripts and tests); True when it succeeded."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.succeeded

    # worker thread below: no bpy here
    def _run(self, venv: Path, wheel: Path, pip_args: list[str]) -> None:
        log_path = self.log_path
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                self._log = log
                python = venv_python(venv)
                if not python.is_file():
                    self._step("Creating the environment", [_base_python(), "-m", "venv", str(venv)])
                self._step("Updating pip", [str(python), "-m", "pip", "install", "--upgrade", "pip"] + _only_index_args(pip_args), optional=True)
                self._step("Installing PyTorch, diffusers and the backend (several GB)",
                           [str(python), "-m", "pip", "install", "--upgrade", str(wheel)] + pip_args)
                self._step("Checking the installation",
                           [str(python), "-c", "import mvdpp, torch, diffusers; print('mvdpp', mvdpp.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"])
                (venv / install_marker().name).write_text("\n".join(list(self.log_tail)[-1:]) + "\n", encoding="utf-8")
            self.succeeded = True
            self.status_line = "Backend installed"
        except _StepFailed as exc:
            self.error, self.hint = exc.message, exc.hint
            self.status_line = "Install failed"
        except OSError as exc:
            self.error = f"Installing failed: {exc}"
            self.hint = f"Check that {venv.parent} is writable and has free space"
            self.status_line = "Install failed"
        finally:
            self.running = False

    def _step(self, title: str, command: list[str], optional: bool = False) -> None:
        self.status_line = title + "..."
        self._write(f"$ {' '.join(shlex.quote(c) for c in command)}")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # Blender's own module paths must not leak into the venv
        env["PYTHONNOUSERSITE"] = "1"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        try:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    encoding="utf-8", errors="replace")
        except OSError as exc:
            raise _StepFailed(f"{title} failed: {exc}", "Check that Blender's Python can create virtual environments") from exc
        for line in proc.stdout:
            self._write(line.rstrip())
        code = proc.wait()
        if code != 0 and not optional:
            raise _StepFailed(f"{title} failed (exit code {code})", _hint_from_log(list(self.log_tail)))

    def _write(self, line: str) -> None:
        self.log_tail.append(line)
        self._log.write(line + "\n")
        self._log.flush()


class _StepFailed(Exception):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


def _base_python() -> str:
    """Blender's bundled Python (it ships venv and pip)."""
    return sys.executable


def _only_index_args(pip_args: list[str]) -> list[str]:
    """The index/offline options of the user's pip arguments (they also apply to upgrading pip)."""
    keep, out, take_next = ("--no-index", "--index-url", "--extra-index-url", "--find-links", "-f", "-i"), [], False
    for arg in pip_args:
        if take_next:
            out.append(arg)
            take_next = False
        elif arg in keep:
            out.append(arg)
            take_next = arg not in ("--no-index",)
        elif any(arg.startswith(k + "=") for k in keep):
            out.append(arg)
    return out


def _hint_from_log(lines: list[str]) -> str:
    text = "\n".join(lines[-60:])
    if re.search(r"No space left on device", text):
        return "The disk is full: free some space (PyTorch needs about 5 GB) and install again"
    if re.search(r"(Could not find a version|No matching distribution)", text):
        return "pip found no matching package: check the extra pip arguments and your Python/CUDA versions"
    if re.search(r"(ConnectionError|Max retries exceeded|Temporary failure in name resolution|SSLError|ProxyError)", text):
        return "pip could not reach the package index: check the internet connection or proxy, then install again"
    if re.search(r"(Permission denied|Errno 13)", text):
        return "The environment folder is not writable: check its permissions"
    if re.search(r"No module named (venv|ensurepip|pip)", text):
        return "Blender's Python cannot create environments here: create one yourself and choose 'Existing interpreter'"
    return "See the install log (Open Install Log) for pip's message"


installer = Installer()


# --- the backend process and its jobs ------------------------------------------------------------


#: The share of a whole job each stage family takes (for one overall progress bar).
STAGE_SPANS = {"starting backend": (0.0, 0.0), "queued": (0.0, 0.0), "text_to_image": (0.0, 0.0), "load_inputs": (0.0, 0.03), "denoise": (0.03, 0.75),
               "decode": (0.75, 0.8), "mesh": (0.8, 0.97), "write": (0.97, 1.0)}
#: With a follow-up reconstruct request the views are saved before the mesh is built.
TWO_PHASE_SPANS = dict(STAGE_SPANS, write=(0.8, 0.82), mesh=(0.82, 1.0))
STAGE_LABELS = {"starting backend": "Starting the backend (loading the model)", "queued": "Queued",
                "text_to_image": "Making the image from the prompt",
                "load_inputs": "Preparing images", "denoise": "Generating views", "decode": "Decoding views",
                "mesh": "Building the mesh", "write": "Saving"}


class GenerateJob:
    """One generate request and what the backend said about it so far."""

    def __init__(self, request: dict, settings: dict | None = None, reconstruct_request: dict | None = None):
        self.request = dict(request)
        #: a follow-up "reconstruct" request (mesh at a chosen detail) sent when the views are done
        self.reconstruct_request = dict(reconstruct_request) if reconstruct_request else None
        self.reconstruct_id: str | None = None
        self.settings = dict(settings or {})
        self.request_id: str | None = None
        self.started_at = time.monotonic()
        self.stage = "starting backend"
        self.step = 0
        self.total = 0
        self.eta_s: float | None = None
        self.finished = False
        self.outcome = ""  # "result" | "cancelled" | "error"
        self.folder: str | None = None
        #: what the result lacks although it was asked for (e.g. the mesh), as the backend put it
        self.warning = ""
        self.error_code = self.error_message = self.error_hint = ""
        self.cancel_requested_at: float | None = None
        self._fraction = 0.0
        #: text to 3D: the generated reference image (a file of the backend) and its bpy.data.images name
        self.condition_image: str | None = None
        self.condition_image_name: str = ""

    @property
    def fraction(self) -> float:
        """Overall progress 0-1 (never goes back), from the stage and its step."""
        family = self.stage.split(":", 1)[0]
        spans = STAGE_SPANS if self.reconstruct_request is None else TWO_PHASE_SPANS
        start, end = spans.get(family, (0.0, 0.0))
        within = min(1.0, self.step / self.total) if self.total else 0.0
        self._fraction = max(self._fraction, start + (end - start) * within)
        return self._fraction

    def status_text(self) -> str:
        family, _, detail = self.stage.partition(":")
        text = STAGE_LABELS.get(family, family.replace("_", " ").capitalize())
        if detail:
            text += f" ({detail.replace('_', ' ')})"
        if self.total:
            text += f" {self.step}/{self.total}"
        if self.eta_s is not None and self.eta_s >= 0:
            text += f" · {format_seconds(self.eta_s)} left"  # the server estimates the current stage
        if self.cancel_requested_at is not None:
            text = "Cancelling..."
        return text

    def _finish(self, outcome: str, code: str = "", message: str = "", hint: str = "") -> None:
        self.finished, self.outcome = True, outcome
        self.error_code, self.error_message, self.error_hint = code, message, hint


class BackendSession:
    """The one backend process of this Blender session, started on first use and kept warm."""

    def __init__(self):
        self.process = None
        self.config: tuple | None = None
        self.ready = False
        self.ready_info: dict = {}
        self.job: GenerateJob | None = None
        self.last_error = ""
        self.last_hint = ""
        self._dead_since: float | None = None
        self._startup_error: dict | None = None

    # state for the UI: NOT_INSTALLED, STOPPED, STARTING, READY, BUSY
    def state(self, prefs=None) -> str:
        if self.job is not None and not self.job.finished:
            return "BUSY"
        if self.process is not None and self._alive():
            return "READY" if self.ready else "STARTING"
        try:
            resolve_interpreter(prefs if prefs is not None else get_preferences())
        except BackendUnavailable:
            return "NOT_INSTALLED"
        return "STOPPED"

    def state_label(self, prefs=None) -> str:
        state = self.state(prefs)
        label = {"NOT_INSTALLED": "Not installed", "STOPPED": "Stopped (starts on Generate)", "STARTING": "Starting...",
                 "READY": "Ready", "BUSY": "Busy"}[state]
        if state in ("READY", "BUSY") and self.ready_info.get("device"):
            label += f" ({self.ready_info['device']})"
        return label

    def _alive(self) -> bool:
        return self.process is not None and self.process.is_running()

    def ensure_started(self, prefs) -> None:
        """Start the backend (or restart it when its settings changed); raises BackendUnavailable."""
        python = resolve_interpreter(prefs)
        config = (python, tuple(serve_arguments(prefs)))
        if self.process is not None and self._alive() and self.config == config:
            return
        self.stop()
        try:
            from mvdpp.client import BackendError, BackendProcess
        except ImportError as exc:
            raise BackendUnavailable(f"The extension's bundled mvdpp package has no client ({exc})",
                                     hint="Reinstall the extension from its release zip") from exc
        process = BackendProcess(python, serve_args=list(config[1]), env=_backend_environment())
        try:
            process.start()
        except (BackendError, OSError) as exc:
            raise BackendUnavailable(f"The backend interpreter {python} cannot be started: {exc}") from exc
        self.process, self.config, self.ready, self.ready_info = process, config, False, {}
        self._dead_since = None
        self._startup_error: dict | None = None

    def submit(self, prefs, request: dict, settings: dict | None = None, reconstruct_request: dict | None = None) -> GenerateJob:
        """Start a generate job (one at a time); the request is sent as soon as the backend is ready."""
        if self.job is not None and not self.job.finished:
            raise BackendUnavailable("A generation is already running", hint="Wait for it or cancel it", code="busy")
        self.ensure_started(prefs)
        job = GenerateJob(request, settings, reconstruct_request)
        self.job = job
        self.last_error = self.last_hint = ""
        if self.ready:
            self._send_job(job)
        return job

    def _send_job(self, job: GenerateJob) -> None:
        request_id = self._send(job, dict(job.request, type="generate"))
        if request_id is not None:
            job.request_id, job.stage = request_id, "queued"

    def _send(self, job: GenerateJob, request: dict) -> str | None:
        """Send a request for ``job``; a backend that just died fails the job instead of raising."""
        from mvdpp.client import BackendError

        try:
            return self.process.send(request)
        except BackendError as exc:
            job._finish("error", exc.code, exc.message, exc.hint or INSTALL_HINT)
            self.last_error, self.last_hint = job.error_message, job.error_hint
            return None

    def cancel(self) -> None:
        job = self.job
        if job is None or job.finished:
            return
        if job.request_id is None:  # never sent: nothing runs, the backend keeps warming up
            job._finish("cancelled")
            return
        if job.cancel_requested_at is None:
            job.cancel_requested_at = time.monotonic()
            try:
                self.process.send({"type": "cancel"})
            except Exception:  # the backend is gone: nothing runs any more
                self.stop()

    def stop(self) -> None:
        if self.process is not None:
            try:
                self.process.stop()
            except Exception as exc:  # stopping must never fail the caller; the process is gone either way
                print(f"MVD++: stopping the backend: {exc}", file=sys.stderr)
        self.process, self.config, self.ready = None, None, False
        if self.job is not None and not self.job.finished:
            self.job._finish("cancelled")

    def poll(self) -> None:
        """Handle every event the backend has sent since the last call; never blocks."""
        if self.process is None:
            return
        process = self.process
        for event in process.poll_events():
            self._handle(event)
            if self.process is not process:  # it exited or was stopped: the rest is stale
                break
        if self.process is process and not process.is_running():
            # The client reports a dead server with a backend_exited event; should that event never
            # come (a reader thread that failed), say so ourselves instead of waiting forever.
            if self._dead_since is None:
                self._dead_since = time.monotonic()
            elif time.monotonic() - self._dead_since > EXIT_EVENT_GRACE_S:
                self._handle({"type": "error", "code": "backend_exited",
                              "message": f"The MVD++ backend exited (exit code {process.returncode}). "
                                         f"{_last_line(process.stderr_tail())}".strip()})
        job = self.job
        if job is not None and not job.finished and job.cancel_requested_at is not None:
            if time.monotonic() - job.cancel_requested_at > CANCEL_GRACE_S:
                self.stop()  # the backend did not answer the cancel: stopping it is the only way out

    def _handle(self, event: dict) -> None:
        kind = event.get("type")
        job = self.job
        if kind == "ready":
            self.ready, self.ready_info = True, dict(event)
            if job is not None and not job.finished and job.request_id is None:
                self._send_job(job)
            return
        if kind == "error" and event.get("code") == "backend_exited":
            message = event.get("message") or "The backend stopped unexpectedly"
            hint = event.get("hint") or INSTALL_HINT
            if not self.ready and self._startup_error is not None:
                # it said why before exiting (a missing checkpoint, no CUDA device, ...)
                message = self._startup_error.get("message") or message
                hint = self._startup_error.get("hint") or ""
            elif not self.ready:
                # it died before it could load: the interpreter lacks mvdpp/torch or is no Python at all
                message = "The backend could not start: " + message
                hint = INSTALL_HINT
            self.ready = False
            self.last_error, self.last_hint = message, hint
            dead, self.process, self.config = self.process, None, None
            try:
                dead.stop(timeout=1.0)  # closes its pipes and joins its reader threads
            except Exception as exc:  # it is gone either way
                print(f"MVD++: cleaning up the exited backend: {exc}", file=sys.stderr)
            if job is not None and not job.finished:
                job._finish("error", "backend_exited", message, hint)
            return
        if kind == "error" and not self.ready and event.get("id") is None:
            self._startup_error = event  # the exit event follows; it reports this
            return
        if job is None or job.finished or event.get("id") != job.request_id:
            if kind == "error":
                self.last_error, self.last_hint = event.get("message", ""), event.get("hint", "")
            return
        if kind == "progress":
            job.stage = str(event.get("stage", job.stage))
            job.step = int(event.get("step", 0) or 0)
            job.total = int(event.get("total", 0) or 0)
            eta = event.get("eta_s")
            job.eta_s = float(eta) if isinstance(eta, (int, float)) else None
            if isinstance(event.get("condition_image"), str) and job.condition_image is None:
                job.condition_image = event["condition_image"]
                job.condition_image_name = load_condition_image(job.condition_image)
        elif kind == "result":
            if job.folder is None:
                job.folder = event.get("folder")
            if event.get("warning"):
                job.warning = str(event["warning"])
            if job.reconstruct_request is not None and job.request_id != job.reconstruct_id:
                # the views are written; now the mesh at the detail the user chose
                request = dict(job.reconstruct_request, views_dir=job.folder, out=os.path.join(job.folder, "mesh.glb"))
                request_id = self._send(job, request)
                if request_id is not None:
                    job.reconstruct_id = job.request_id = request_id
                    job.stage, job.step, job.total, job.eta_s = "mesh", 0, 0, None
                return
            job._finish("result")
        elif kind == "cancelled":
            job._finish("cancelled")
        elif kind == "error":
            job._finish("error", event.get("code", ""), event.get("message", "The backend reported an error"), event.get("hint", ""))
            self.last_error, self.last_hint = job.error_message, job.error_hint


CONDITION_IMAGE_NAME = "MVD++ Prompt Image"


def load_condition_image(path: str) -> str:
    """Load the image the text-to-image model made (packed: the backend's copy is temporary) so the
    panel can show it while the views are made; returns its name ("" when it cannot be read)."""
    old = bpy.data.images.get(CONDITION_IMAGE_NAME)
    try:
        image = bpy.data.images.load(path, check_existing=False)
        image.pack()
    except (RuntimeError, OSError) as exc:
        print(f"MVD++: cannot show the generated image {path}: {exc}", file=sys.stderr)
        return ""
    if old is not None and old.users == 0:
        bpy.data.images.remove(old)  # the previous prompt's image, unless the user kept it
    image.name = CONDITION_IMAGE_NAME
    if hasattr(image, "preview_ensure"):
        image.preview_ensure()
    return image.name


def _backend_environment() -> dict:
    """The backend's environment: Blender's own Python paths must not leak into its interpreter."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return f"Last log line: {lines[-1][:300]}" if lines else ""


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


session = BackendSession()


def unregister():
    session.stop()
