"""User-facing errors: a stable code, a one-line message and a hint saying what to do.

Raised anywhere in the backend; the command line prints ``message`` and ``hint`` (no traceback)
and the server sends them as an ``error`` event. Standard library only.
"""

from __future__ import annotations

BAD_INPUT = "bad_input"
BAD_REQUEST = "bad_request"
BUSY = "busy"
CANCELLED = "cancelled"
CHECKPOINT = "checkpoint"
OUT_OF_MEMORY = "out_of_memory"
DEVICE = "device"
OUTPUT_EXISTS = "output_exists"
NO_OBJECT = "no_object"
#: the views disagree so much that no solid is covered by enough of their masks (no mesh possible)
INCONSISTENT_VIEWS = "inconsistent_views"
INTERNAL = "internal"


class MVDPPError(Exception):
    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class JobCancelled(MVDPPError):
    def __init__(self, message: str = "The job was cancelled."):
        super().__init__(CANCELLED, message, "")
