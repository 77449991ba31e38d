"""Request building, result parsing and the retry schedule shared by both clients.

The asyncio client reuses exactly these functions, so the two cannot drift.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from aln.client.errors import AlnClientError
from aln.client.types import ImageInput, Prediction
from aln.preprocessing import contract


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter, for UNAVAILABLE only.

    Attributes:
        max_attempts: Tries in all (1 = no retry).
        initial_backoff_s: Wait before the second try.
        max_backoff_s: Longest wait between tries.
        multiplier: Growth of the wait per try.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def backoff_s(self, attempt: int) -> float:
        """Wait after failed try number ``attempt`` (1-based), with +-20% jitter."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))


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
    arrays: dict[str, np.ndarray[Any, Any]] = {
        contract.PRIMARY_DICOM.name: np.frombuffer(primary.dicom_bytes(), dtype=np.uint8)[None],
        contract.PRIMARY_REGION.name: np.array([primary.region()], dtype=np.float32),
        contract.CLINICAL_RECORD.name: np.array([[clinical_json(clinical)]], dtype=object),
    }
    options: dict[str, Any] = {}
    if primary.options():
        options["primary"] = primary.options()
    if auxiliary is not None:
        # An auxiliary region on the primary image is sent as a region only.
        data = auxiliary.dicom_bytes()
        if data != arrays[contract.PRIMARY_DICOM.name].tobytes():
            arrays[contract.AUXILIARY_DICOM.name] = np.frombuffer(data, dtype=np.uint8)[None]
        arrays[contract.AUXILIARY_REGION.name] = np.array([auxiliary.region()], dtype=np.float32)
        if auxiliary.options():
            options["auxiliary"] = auxiliary.options()
    if options:
        arrays[contract.REQUEST_OPTIONS.name] = np.array(
            [[json.dumps(options).encode()]], dtype=object
        )
    return arrays


def infer_inputs(module: Any, arrays: Mapping[str, np.ndarray[Any, Any]]) -> list[Any]:
    """``InferInput`` objects of a tritonclient module (``grpc`` or ``grpc.aio``)."""
    specs = {t.name: t for t in contract.ENSEMBLE_INPUTS}
    inputs = []
    for name, array in arrays.items():
        item = module.InferInput(name, list(array.shape), specs[name].dtype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def requested_outputs(module: Any) -> list[Any]:
    """``InferRequestedOutput`` objects for the ensemble outputs."""
    return [module.InferRequestedOutput(t.name) for t in contract.ENSEMBLE_OUTPUTS]


def parse_result(result: Any) -> Prediction:
    """A :class:`Prediction` from a tritonclient ``InferResult``."""
    probability = result.as_numpy(contract.ALN_PROBABILITY.name).reshape(-1)[0]
    logit = result.as_numpy(contract.ALN_LOGIT.name).reshape(-1)[0]
    provenance = result.as_numpy(contract.PROVENANCE.name).reshape(-1)[0]
    return Prediction.from_outputs(probability, logit, provenance)
