"""Request building, result parsing and the retry schedule shared by both clients.

The asyncio client reuses exactly these functions, so the two cannot drift.
"""

from __future__ import annotations

import json
import random
import secrets
import time
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from aln.client.errors import (
    AlnClientError,
    InferenceTimeoutError,
    InvalidInputError,
    from_server_exception,
    is_retryable,
    status_name,
)
from aln.client.shared_memory import Lease, Placement, SharedMemory, release_at_exit
from aln.client.types import Explanation, ImageInput, Prediction
from aln.preprocessing import contract, decision
from aln.preprocessing.errors import ManifestError

SHARED_MEMORY_INPUTS = (contract.PRIMARY_DICOM.name, contract.AUXILIARY_DICOM.name)
"""The inputs that travel through shared memory when a client uses it: the DICOM bytes (the
region, the clinical record and the options are a few hundred bytes and stay in the request)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter, for passing refusals only.

    Retried: UNAVAILABLE and the server states of :data:`aln.client.errors.TRANSIENT`.

    Attributes:
        max_attempts: Tries in all (1 = no retry). The default 16 spans about 25 s of
            backoff, so the call's deadline (30 s by default) is what ends the retries: a
            supervised model reload takes 2-4 s on an idle machine and was seen at 14 s on a
            loaded one, where 8 tries (9 s) lost requests.
        initial_backoff_s: Wait before the second try.
        max_backoff_s: Longest wait between tries.
        multiplier: Growth of the wait per try.
    """

    max_attempts: int = 16
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def backoff_s(self, attempt: int) -> float:
        """Wait after failed try number ``attempt`` (1-based), with +-20% jitter."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))


class ClientSettings:
    """What both clients are built from (same arguments, same meaning).

    Args:
        url: ``host:port`` of Triton's gRPC endpoint.
        timeout_s: Default deadline of one prediction, retries included.
        retry: Retry schedule for UNAVAILABLE and passing server states (see
            :func:`aln.client.errors.is_retryable`; other errors are never retried).
        cancel_grace_s: The server enforces ``timeout_s``; the gRPC call itself is cancelled only
            this much later (see :class:`Attempts` for why).
        ssl: Use TLS.
        root_certificates: PEM file of the CA that signed the server's certificate.
        private_key: PEM file of the client key (mutual TLS).
        certificate_chain: PEM file of the client certificate (mutual TLS).
        model_name: The ensemble's name.
        shared_memory: Send the DICOM bytes through Triton system shared memory (a caller on
            the server's host; see :mod:`aln.client.shared_memory`). When the server cannot map
            this client's regions (another host) the client warns once and sends bytes.
    """

    _triton: Any = None  # the tritonclient module: grpc or grpc.aio

    def __init__(
        self,
        url: str = "localhost:8001",
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        cancel_grace_s: float = 10.0,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        model_name: str = contract.ENSEMBLE,
        shared_memory: bool = False,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.cancel_grace_s = cancel_grace_s
        self.model_name = model_name
        connection = {
            "ssl": ssl,
            "root_certificates": root_certificates,
            "private_key": private_key,
            "certificate_chain": certificate_chain,
        }
        self._client = self._triton.InferenceServerClient(url, **connection)
        self._shared = SharedMemory() if shared_memory else None
        self._operating_points: dict[str, decision.OperatingPoint | None] = {}
        if self._shared is not None:
            # A client never closed still releases its regions when collected or at exit.
            weakref.finalize(self, release_at_exit(self._shared, _unregister_with(url, connection)))

    def _learn_operating_point(self, config: dict[str, Any] | None, version: str) -> None:
        """Remember the operating point a model config publishes, keyed by model version.

        ``version`` (the answer's) is remembered as having none when the config publishes none,
        so the config is read once per version; a config already serving another version (a
        reload in between) is remembered under its own version only.
        """
        published = None
        if config is not None:
            parameters = config.get("config", config).get("parameters", {})
            text = parameters.get(decision.PARAMETER, {}).get("string_value")
            if text is not None:
                try:
                    published = decision.from_parameter(text, self.model_name)
                except ManifestError as exc:
                    warnings.warn(
                        f"The server's operating point is not usable: {exc}", stacklevel=3
                    )
        if published is None:
            self._operating_points[version] = None
        else:
            self._operating_points[published[0]] = published[1]

    def _attach_operating_point(self, prediction: Prediction) -> Prediction:
        point = self._operating_points.get(prediction.model_version)
        return prediction if point is None else replace(prediction, operating_point=point)

    @property
    def uses_shared_memory(self) -> bool:
        """Whether studies go through shared memory (False after a fallback to gRPC bytes)."""
        return self._shared is not None and self._shared.available

    def _attempts(self, timeout_s: float | None) -> Attempts:
        return Attempts(
            timeout_s if timeout_s is not None else self.timeout_s, self.retry, self.cancel_grace_s
        )


UNREGISTER_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8)
"""Waits between tries of unregistering a region at close. A registration was once left behind
after the concurrency test's close (a fresh-clone run under load); the likeliest cause, not yet
confirmed, is the server still holding the region just after the last answer, so a failed
unregister is tried again; a server that is gone is not asked again."""


def unregister_failed_for_good(exc: Exception) -> bool:
    """Whether a failed unregister is final (the server is gone), not worth another try."""
    status_fn = getattr(exc, "status", None)
    return status_name(status_fn() if callable(status_fn) else None) == "UNAVAILABLE"


def region_lost(exc: Exception, lease: Lease, registered_again: bool) -> bool:
    """Whether a failed try lost the lease's region (then register it again and retry).

    Raises:
        InvalidInputError: The server lost the region a second time, naming region and sizes.
    """
    status_fn, message_fn = getattr(exc, "status", None), getattr(exc, "message", None)
    status = status_name(status_fn() if callable(status_fn) else None)
    message = str(message_fn() if callable(message_fn) else exc)
    if not SharedMemory.lost(status, message, lease):
        return False
    if registered_again:
        raise InvalidInputError(
            f"The server lost {lease.describe()} twice: {message}", "INVALID_ARGUMENT"
        ) from exc
    return True


def _unregister_with(url: str, connection: dict[str, Any]) -> Any:
    """An ``unregister(name)`` over a blocking channel of its own (usable at interpreter exit)."""

    def unregister(name: str) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url, **connection)
        try:
            client.unregister_system_shared_memory(name)
        finally:
            client.close()

    return unregister


def new_request_id() -> str:
    """A random id for one call, sent as Triton's request id with every try of it.

    The server's log names it where it matters (a model instance that crashed while working on
    the request); it says nothing about the patient or the study.
    """
    return secrets.token_hex(8)


class Attempts:
    """The deadline and retry bookkeeping of one prediction, shared by both clients.

    The deadline is enforced by the server (Triton's request ``timeout``, honoured by the queue
    policy) rather than by cancelling the gRPC call: Triton 2.51, the server in the
    ``nvidia-pytriton`` wheel, can crash when a gRPC call is cancelled while a Python-backend model
    is still working on it (fixed upstream in 25.04, server PRs 7840 and 8078). The gRPC deadline
    is therefore ``grace_s`` later than the caller's; an answer that arrives after the caller's
    deadline is discarded and reported as a timeout.

    Args:
        timeout_s: The caller's deadline for the whole call, retries included.
        retry: The retry schedule (UNAVAILABLE only).
        grace_s: How much later the gRPC call itself is cancelled.
    """

    def __init__(self, timeout_s: float, retry: RetryPolicy, grace_s: float) -> None:
        self.request_id = new_request_id()
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.retry = retry
        self.grace_s = grace_s
        self.attempt = 0

    def timeouts(self) -> tuple[int, float]:
        """``(server timeout in microseconds, gRPC deadline in seconds)`` for the next try.

        Raises:
            InferenceTimeoutError: No time is left.
        """
        self.attempt += 1
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._stamped(
                InferenceTimeoutError(
                    "The deadline passed before the server answered", "DEADLINE_EXCEEDED"
                )
            )
        return max(1, int(remaining * 1e6)), remaining + self.grace_s

    def answered(self) -> None:
        """Refuse an answer that came after the caller's deadline."""
        if time.monotonic() > self.deadline:
            raise self._stamped(
                InferenceTimeoutError(
                    "The server answered after the deadline; the answer was discarded",
                    "DEADLINE_EXCEEDED",
                )
            )

    def _stamped(self, error: AlnClientError) -> AlnClientError:
        """``error`` with this call's request id, tries and time spent."""
        error.request_id = self.request_id
        error.tries = max(1, self.attempt)
        error.elapsed_s = time.monotonic() - self.started
        return error

    def failed(self, exc: Exception) -> float:
        """Map a failed try: returns the pause before retrying, or raises the mapped error.

        The error raised records how many tries were made and over how long (its ``tries`` and
        ``elapsed_s``, shown in its text after a retry).
        """
        error = self._stamped(from_server_exception(exc))
        if error.status == "UNAVAILABLE" and time.monotonic() >= self.deadline:
            # The server's own deadline rejection ("Request timeout expired") is a timeout.
            raise self._stamped(InferenceTimeoutError(error.message, "DEADLINE_EXCEEDED")) from exc
        if not is_retryable(error) or self.attempt >= self.retry.max_attempts:
            raise error from exc
        pause = self.retry.backoff_s(self.attempt)
        if time.monotonic() + pause >= self.deadline:
            raise error from exc  # no time for another try: the server's refusal, with its cause
        return pause


def clinical_json(clinical: Mapping[str, Any] | str) -> bytes:
    """The clinical record as compact JSON bytes."""
    if isinstance(clinical, str):
        return clinical.encode()
    try:
        return json.dumps(dict(clinical), separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise AlnClientError(f"The clinical record cannot be encoded as JSON: {exc}") from exc


def build_arrays(
    primary: ImageInput, clinical: Mapping[str, Any] | str, auxiliary: ImageInput | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """The ensemble's input arrays (batch dimension 1) keyed by contract name."""
    primary_data = primary.dicom_bytes()
    arrays: dict[str, np.ndarray[Any, Any]] = {
        contract.PRIMARY_DICOM.name: np.frombuffer(primary_data, dtype=np.uint8)[None],
        contract.PRIMARY_REGION.name: np.array([primary.region()], dtype=np.float32),
        contract.CLINICAL_RECORD.name: np.array([[clinical_json(clinical)]], dtype=object),
    }
    options: dict[str, Any] = {}
    if primary.options():
        options["primary"] = primary.options()
    if auxiliary is not None:
        # An auxiliary region on the primary image is sent as a region only.
        data = auxiliary.dicom_bytes()
        if data != primary_data:
            arrays[contract.AUXILIARY_DICOM.name] = np.frombuffer(data, dtype=np.uint8)[None]
        arrays[contract.AUXILIARY_REGION.name] = np.array([auxiliary.region()], dtype=np.float32)
        if auxiliary.options():
            options["auxiliary"] = auxiliary.options()
    if options:
        arrays[contract.REQUEST_OPTIONS.name] = np.array(
            [[json.dumps(options).encode()]], dtype=object
        )
    return arrays


def shared_inputs(arrays: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of :data:`SHARED_MEMORY_INPUTS` present in ``arrays``."""
    return {name: arrays[name] for name in SHARED_MEMORY_INPUTS if name in arrays}


def infer_inputs(
    module: Any,
    arrays: Mapping[str, np.ndarray[Any, Any]],
    placements: Mapping[str, Placement] | None = None,
) -> list[Any]:
    """``InferInput`` objects of a tritonclient module (``grpc`` or ``grpc.aio``).

    An input with a placement names its shared-memory region instead of carrying its bytes.
    """
    specs = {t.name: t for t in contract.EXPLAIN_INPUTS}  # the ensemble's and the grid
    placements = placements or {}
    inputs = []
    for name, array in arrays.items():
        item = module.InferInput(name, list(array.shape), specs[name].dtype)
        if name in placements:
            where = placements[name]
            item.set_shared_memory(where.region, where.size, where.offset)
        else:
            item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


ENSEMBLE_OUTPUT_NAMES = tuple(t.name for t in contract.ENSEMBLE_OUTPUTS)
"""What a prediction asks the ensemble for."""
EXPLAIN_OUTPUT_NAMES = tuple(t.name for t in contract.EXPLAIN_OUTPUTS)
"""What an explanation asks ``aln_explain`` for."""


def explain_arrays(
    primary: ImageInput,
    clinical: Mapping[str, Any] | str,
    auxiliary: ImageInput | None,
    grid: int | None,
) -> dict[str, np.ndarray[Any, Any]]:
    """The ``aln_explain`` inputs: a prediction's, and the grid side when one is asked for."""
    arrays = build_arrays(primary, clinical, auxiliary)
    if grid is not None:
        arrays[contract.EXPLAIN_GRID.name] = np.array([[grid]], dtype=np.int32)
    return arrays


def parse_explanation(result: Any) -> Explanation:
    """An :class:`Explanation` from a tritonclient ``InferResult`` of ``aln_explain``."""
    box = result.as_numpy(contract.EXPLANATION_BOX.name).reshape(-1)
    return Explanation(
        prediction=parse_result(result),
        importance=result.as_numpy(contract.EXPLANATION_MAP.name)[0],
        crop=result.as_numpy(contract.EXPLANATION_CROP.name)[0],
        crop_box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
    )


def parse_result(result: Any) -> Prediction:
    """A :class:`Prediction` from a tritonclient ``InferResult``."""
    values = [result.as_numpy(t.name).reshape(-1)[0] for t in contract.ENSEMBLE_OUTPUTS]
    return Prediction.from_outputs(*values)
