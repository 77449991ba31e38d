"""Client errors: one root, one class per gRPC status family, raised ``from`` the original."""

from __future__ import annotations


class AlnClientError(Exception):
    """Root of every error raised by :mod:`aln.client`.

    Attributes:
        status: The gRPC status code name (``"INVALID_ARGUMENT"``, ...) or None for local errors.
        message: The server's message, kept as sent.
        request_id: The id the request was sent under (every try of one call shares it; the
            server's log names it, for example when a model crashed on it); None for local errors.
        tries: How many times the request was sent before this error was raised (1 = no retry).
        elapsed_s: Seconds from the first try until the client gave up (None for local errors).
    """

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message if status is None else f"[{status}] {message}")
        self.status = status
        self.message = message
        self.request_id: str | None = None
        self.tries = 1
        self.elapsed_s: float | None = None

    def __str__(self) -> str:
        notes = []
        if self.request_id is not None:
            notes.append(f"request {self.request_id}")
        if self.tries > 1 and self.elapsed_s is not None:
            notes.append(f"gave up after {self.tries} tries in {self.elapsed_s:.1f} s")
        text = super().__str__()
        return f"{text} ({'; '.join(notes)})" if notes else text


class InvalidInputError(AlnClientError):
    """The server refused the study (INVALID_ARGUMENT); the message names the cause."""


class ModelUnavailableError(AlnClientError):
    """The server or model cannot take the request now (UNAVAILABLE, NOT_FOUND, overload)."""


class InferenceTimeoutError(AlnClientError):
    """The deadline passed before an answer came (DEADLINE_EXCEEDED)."""


class ServerError(AlnClientError):
    """Any other server-side failure (INTERNAL, UNKNOWN, ...)."""


_BY_STATUS: dict[str, type[AlnClientError]] = {
    "INVALID_ARGUMENT": InvalidInputError,
    "UNAVAILABLE": ModelUnavailableError,
    "NOT_FOUND": ModelUnavailableError,
    "RESOURCE_EXHAUSTED": ModelUnavailableError,
    "DEADLINE_EXCEEDED": InferenceTimeoutError,
    "CANCELLED": InferenceTimeoutError,
}
RETRYABLE = frozenset({"UNAVAILABLE"})
TRANSIENT = (
    ("NOT_FOUND", "has no available versions"),
    ("INTERNAL", "is not healthy"),
)
"""Server states that pass and are retried like UNAVAILABLE: ``(status, message fragment)``.

A model being reloaded has no available version for a moment, and requests that reach the
instance of a Python-backend stub that died are refused as "not healthy" until the server's
supervisor has reloaded it (``aln.serving.supervisor``). A request refused in either state was
never run, so sending it again is safe."""


def is_retryable(error: AlnClientError) -> bool:
    """Whether a refusal is worth another try: UNAVAILABLE, or a :data:`TRANSIENT` state."""
    if error.status in RETRYABLE:
        return True
    return any(error.status == s and fragment in error.message for s, fragment in TRANSIENT)


def status_name(raw: object) -> str:
    """Normalise tritonclient's status (``"StatusCode.UNAVAILABLE"``) to ``"UNAVAILABLE"``."""
    text = str(raw or "UNKNOWN")
    return text.rsplit(".", 1)[-1].upper()


def from_server_exception(exc: Exception) -> AlnClientError:
    """Map a ``tritonclient`` exception to this hierarchy by its gRPC status code."""
    status_fn = getattr(exc, "status", None)
    message_fn = getattr(exc, "message", None)
    status = status_name(status_fn() if callable(status_fn) else None)
    message = str(message_fn() if callable(message_fn) else exc)
    return _BY_STATUS.get(status, ServerError)(message, status)
