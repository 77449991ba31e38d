"""Turn the raw tensors of one served request into model inputs.

The Triton ``preprocess`` model (:class:`aln.serving.triton_models.PreprocessModel`) is a thin
loop over :class:`StudyPreprocessor`; everything it does is here, testable without a server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.preprocessing import contract
from aln.preprocessing.contract import ImageOptions, auxiliary_options
from aln.preprocessing.crop import Region
from aln.preprocessing.decode import DecodeStrategy
from aln.preprocessing.errors import InvalidRequestError
from aln.preprocessing.header import DicomBytes, Limits
from aln.preprocessing.manifest import Manifest
from aln.preprocessing.pipeline import StudyInput, StudyTensors, preprocess_study


def _bytes_of(array: npt.NDArray[Any] | None, name: str) -> memoryview | None:
    """The input's bytes as a view over the tensor: a served 26 MB study is never copied here."""
    if array is None:
        return None
    if array.dtype != np.uint8:
        raise InvalidRequestError(f"Input '{name}' has dtype {array.dtype}, it must be UINT8")
    return memoryview(np.ascontiguousarray(array).data).cast("B")


def same_bytes(first: DicomBytes, second: DicomBytes) -> bool:
    """Whether two encoded objects are byte for byte the same (without copying either)."""
    if first is second:
        return True
    a, b = np.frombuffer(first, dtype=np.uint8), np.frombuffer(second, dtype=np.uint8)
    return a.size == b.size and bool(np.array_equal(a, b))


def _string_of(array: npt.NDArray[Any] | None, name: str) -> bytes | None:
    if array is None:
        return None
    flat = array.reshape(-1)
    if flat.size != 1:
        raise InvalidRequestError(f"Input '{name}' must hold one string, got {flat.size}")
    value = flat[0]
    return value if isinstance(value, bytes) else str(value).encode()


def _region_of(array: npt.NDArray[Any] | None, name: str) -> Region | None:
    return None if array is None else Region.from_array(array, name)


def parse_options(payload: bytes | None) -> dict[str, ImageOptions]:
    """Parse ``request_options`` JSON: ``{"primary": {...}, "auxiliary": {...}}``.

    Each image may give ``laterality`` (L/R), ``view`` (CC/MLO) and ``spacing_mm``.

    Raises:
        InvalidRequestError: Not JSON, an unknown key, or a value of the wrong type.
    """
    if payload is None or not payload.strip():
        return {}
    try:
        raw = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"Input 'request_options' is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) - set(contract.IMAGE_KEYS):
        raise InvalidRequestError(
            "Input 'request_options' must be a JSON object with keys 'primary' and/or 'auxiliary'"
        )
    options = {}
    for image, values in raw.items():
        allowed = set(contract.OPTION_KEYS)
        if not isinstance(values, dict) or set(values) - allowed:
            unknown = sorted(set(values) - allowed) if isinstance(values, dict) else values
            raise InvalidRequestError(
                f"request_options['{image}'] has unknown keys {unknown}; allowed: "
                f"{', '.join(sorted(allowed))}"
            )
        spacing = values.get("spacing_mm")
        if spacing is not None and (
            isinstance(spacing, bool) or not isinstance(spacing, int | float)
        ):
            raise InvalidRequestError(
                f"request_options['{image}']['spacing_mm'] is {spacing!r}, it must be a number"
            )
        for key in ("laterality", "view"):
            if values.get(key) is not None and not isinstance(values[key], str):
                raise InvalidRequestError(
                    f"request_options['{image}']['{key}'] is {values[key]!r}, it must be a string"
                )
        options[image] = ImageOptions(
            laterality=values.get("laterality"),
            view=values.get("view"),
            spacing_mm=None if spacing is None else float(spacing),
        )
    return options


@dataclass(frozen=True)
class RawRequest:
    """The ensemble inputs of one request, as arrays (batch dimension removed).

    Attributes:
        primary_dicom: The encoded DICOM, a view over the request's uint8 (n,) tensor.
        primary_region: float32 (6,).
        clinical_record: JSON bytes.
        auxiliary_dicom: The same for the auxiliary image, or None (the auxiliary region then
            lies on the primary image).
        auxiliary_region: float32 (6,) or None (no auxiliary image).
        request_options: JSON bytes or None.
    """

    primary_dicom: DicomBytes
    primary_region: Region
    clinical_record: bytes
    auxiliary_dicom: DicomBytes | None = None
    auxiliary_region: Region | None = None
    request_options: bytes | None = None

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any] | None]) -> RawRequest:
        """Build from one request's tensors keyed by contract name (absent optional = None).

        Each tensor carries Triton's leading batch dimension, which must be 1: one study per
        request (concurrent requests are what the server batches).

        Raises:
            InvalidRequestError: A missing required input, a batch other than 1, wrong dtype or
                size.
        """

        def get(spec: contract.TensorSpec) -> npt.NDArray[Any] | None:
            value = arrays.get(spec.name)
            if value is None:
                if not spec.optional:
                    raise InvalidRequestError(f"Required input '{spec.name}' is missing")
                return None
            value = np.asarray(value)
            if value.ndim < 2 or value.shape[0] != 1:
                raise InvalidRequestError(
                    f"Input '{spec.name}' has shape {list(value.shape)}; send one study per "
                    f"request, shape [1, {', '.join(map(str, spec.dims))}]"
                )
            first: npt.NDArray[Any] = value[0]
            return first

        primary = _bytes_of(get(contract.PRIMARY_DICOM), contract.PRIMARY_DICOM.name)
        region = _region_of(get(contract.PRIMARY_REGION), contract.PRIMARY_REGION.name)
        clinical = _string_of(get(contract.CLINICAL_RECORD), contract.CLINICAL_RECORD.name)
        assert primary is not None and region is not None and clinical is not None
        aux_dicom = _bytes_of(get(contract.AUXILIARY_DICOM), contract.AUXILIARY_DICOM.name)
        aux_region = _region_of(get(contract.AUXILIARY_REGION), contract.AUXILIARY_REGION.name)
        if aux_dicom is not None and aux_region is None:
            raise InvalidRequestError(
                "Input 'auxiliary_dicom' was sent without 'auxiliary_region'; send the region to "
                "crop on it"
            )
        options = _string_of(get(contract.REQUEST_OPTIONS), contract.REQUEST_OPTIONS.name)
        return cls(primary, region, clinical, aux_dicom, aux_region, options)


class StudyPreprocessor:
    """Everything built once per server instance: schema, crop spec, model identity, limits.

    Args:
        manifest: The checkpoint manifest.
        limits: Resource limits.
        strategy: ``"region"`` (decode only the crop, served) or ``"full"`` (decode everything:
            the naive baseline of the benchmarks); identical results.
        engine: The served engines as ``format/precision`` (``openvino/int8``), recorded in the
            provenance's ``model`` beside the checkpoint identity; None records nothing.
    """

    def __init__(
        self,
        manifest: Manifest,
        limits: Limits | None = None,
        strategy: DecodeStrategy = "region",
        engine: str | None = None,
    ) -> None:
        self.strategy: DecodeStrategy = strategy
        self.manifest = manifest
        self.model_info = {**manifest.identity, **({"engine": engine} if engine else {})}
        self.schema = manifest.schema
        self.limits = limits or Limits()

    def __call__(self, request: RawRequest) -> StudyTensors:
        """Preprocess one request.

        Raises:
            PreprocessingError: Naming the input, tag or field at fault; an auxiliary region sent
                to a model without an auxiliary branch is refused naming the input.
        """
        options = parse_options(request.request_options)
        primary_options = options.get("primary", ImageOptions())
        primary = StudyInput(request.primary_dicom, request.primary_region, primary_options)
        auxiliary = None
        if request.auxiliary_region is not None:
            self.manifest.check_auxiliary_allowed()
            aux_dicom = request.auxiliary_dicom
            if aux_dicom is None:
                aux_dicom = request.primary_dicom
            same = same_bytes(aux_dicom, request.primary_dicom)
            auxiliary = StudyInput(
                aux_dicom,
                request.auxiliary_region,
                auxiliary_options(
                    primary_options, options.get("auxiliary", ImageOptions()), same_dicom=same
                ),
            )
        return preprocess_study(
            primary,
            request.clinical_record,
            self.schema,
            self.manifest.crop,
            auxiliary,
            limits=self.limits,
            strategy=self.strategy,
            model_info=self.model_info,
        )
