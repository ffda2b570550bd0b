"""The JSON-lines protocol between the Blender extension and ``mvdpp serve``.

One JSON object per line, UTF-8, on the server's stdin (requests) and stdout (events). Nothing
else is ever written to stdout; logs go to stderr. Every message has a ``type``; requests carry
an ``id`` chosen by the client, which the events about that request repeat.

Requests (client -> server)::

    {"type": "ping", "id": "1"}
    {"type": "generate", "id": "2", "images": ["/a.png", ...], "out": "/results/x",
     "steps": 30, "guidance": 6.0, "seed": 0, "scheduler": "dpm++", "mesh": true,
     "mesh_quality": "auto", "overwrite": false}   # every key but images/out is optional
    {"type": "generate", "id": "2b", "prompt": "a red teapot", "t2i_model": "stabilityai/sd-turbo",
     "t2i_steps": 1, "t2i_guidance": 0.0, "out": "/results/y"}   # text to 3D: prompt instead of images
    {"type": "reconstruct", "id": "3", "views_dir": "/results/x", "out": "/results/x/mesh.glb",
     "quality": "auto", "overwrite": false}
    {"type": "cancel", "id": "4"}            # cancels the running job, whatever its id
    {"type": "shutdown", "id": "5"}

Events (server -> client)::

    {"type": "ready", "protocol": 1, "version": "0.1.0", "device": "cuda", "checkpoint": "...",
     "low_vram": false, "resolution": 256}
    {"type": "pong", "id": "1", "busy": false}
    {"type": "progress", "id": "2", "stage": "denoise", "step": 3, "total": 30,
     "elapsed_s": 1.2, "eta_s": 10.8}
    {"type": "progress", "id": "2b", "stage": "text_to_image", "step": 1, "total": 1,
     "condition_image": "/tmp/.../prompt_image.png"}   # the generated input, before the views
    {"type": "result", "id": "2", "folder": "/results/x", "elapsed_s": 41.0}
    {"type": "result", "id": "3", "mesh": "/results/x/mesh.glb"}
    {"type": "cancelled", "id": "2"}
    {"type": "error", "id": "2", "code": "bad_input", "message": "...", "hint": "..."}
    {"type": "bye", "id": "5"}

docs/protocol.md is the full reference (every key, error code and the order of events).
Standard library only: the Blender extension imports this module.
"""

from __future__ import annotations

import json

PROTOCOL_VERSION = 1

#: Classifier-free guidance of a generate request that gives none. Measured on the embedded model
#: (50 held-out objects, BENCHMARKS.md): 6 beats 3 on every view and mesh figure, with 1 and 4 inputs.
DEFAULT_GUIDANCE = 6.0

#: Guidance rescale (0-1) of a generate request that gives none: how far each view's guided
#: prediction is brought back to the conditional prediction's spread (Lin et al. 2023; see
#: mvdpp.pipelines.pipeline_mvdpp.rescale_guided_prediction). On the embedded model 1 beat 0.7 and
#: both beat 0 (plain guidance) on most of 12 held-out objects (CPU), and 1 beat 0 on most of the
#: 50 (H100), views and meshes (BENCHMARKS.md).
DEFAULT_GUIDANCE_RESCALE = 1.0

# request types
PING, GENERATE, RECONSTRUCT, CANCEL, SHUTDOWN = "ping", "generate", "reconstruct", "cancel", "shutdown"
REQUEST_TYPES = (PING, GENERATE, RECONSTRUCT, CANCEL, SHUTDOWN)
# event types
READY, PONG, PROGRESS, RESULT, CANCELLED, ERROR, BYE = "ready", "pong", "progress", "result", "cancelled", "error", "bye"
EVENT_TYPES = (READY, PONG, PROGRESS, RESULT, CANCELLED, ERROR, BYE)


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


def encode(message: dict) -> str:
    """One protocol line (with its newline) for a message."""
    if "type" not in message:
        raise ProtocolError("a message needs a 'type'")
    return json.dumps(message, separators=(",", ":"), ensure_ascii=True) + "\n"


def decode(line: str | bytes) -> dict:
    """Parse one line into a message dict; raises ProtocolError for anything malformed."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("the line is not UTF-8") from exc
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"the line is not JSON ({exc.msg})") from exc
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    if not isinstance(message.get("type"), str):
        raise ProtocolError("a message needs a string 'type'")
    return message


def error_event(request_id, code: str, message: str, hint: str = "") -> dict:
    return {"type": ERROR, "id": request_id, "code": code, "message": message, "hint": hint}
