"""DICOM bytes + region (+ clinical record) to model-ready tensors: the one preprocessing.

Training, the in-process reference predictor and the Triton ``preprocess`` model all call
:func:`preprocess_image` and :func:`preprocess_study`; nothing else on those paths touches pixels.

Per image: read and check the header -> resolve laterality, view and flip -> resolve spacing ->
compute the crop box in stored coordinates -> decode only that window -> grey-level pipeline ->
pad with background where the box leaves the image -> mirror so the chest wall is on the left ->
one anti-aliased resize -> three channels, ImageNet normalisation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.preprocessing import contract
from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.contract import ImageOptions
from aln.preprocessing.crop import (
    Box,
    CropSpec,
    Region,
    clip_box,
    crop_box,
    normalise,
    pad_to_box,
    resize,
)
from aln.preprocessing.decode import DecodeStrategy, Window, decode_window, transfer_syntax_name
from aln.preprocessing.errors import InvalidDicomError, PreprocessingError
from aln.preprocessing.geometry import resolve_orientation, resolve_spacing
from aln.preprocessing.header import DicomBytes, Limits, read_header
from aln.preprocessing.pixels import apply_grey_levels, grey_levels_from_dataset


@contextmanager
def malformed_attributes_are_invalid() -> Iterator[None]:
    """Report a header value that cannot be interpreted as :class:`InvalidDicomError`.

    The checks name the tags they expect; this catches what no check foresaw (a number that is
    not a number, a sequence item without its mandatory attribute) so it is answered as bad input
    rather than as a server error.
    """
    try:
        yield
    except PreprocessingError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        raise InvalidDicomError(
            f"A header attribute is malformed ({type(exc).__name__}): {exc}"
        ) from exc


@dataclass(frozen=True)
class ImageProvenance:
    """Where a crop came from; every served answer carries one per image.

    Attributes:
        spacing_mm: Millimetres per stored pixel at the breast.
        spacing_source: ``calibrated``, ``imager_ermf``, ``uncalibrated`` or ``caller``.
        crop_box: ``(x0, y0, x1, y1)`` in stored-pixel coordinates (half-open).
        padded: The box reached outside the image and was padded with background.
        laterality: ``L`` or ``R``.
        view: ``CC`` or ``MLO``.
        flipped: The crop was mirrored to put the chest wall on the left.
        manufacturer: Manufacturer (0008,0070).
        transfer_syntax: Short transfer syntax name.
        crop_method: The crop method.
        crop_size_mm: Side of the crop at the breast, millimetres.
        magnification_view: The header marks a magnification view.
    """

    spacing_mm: float
    spacing_source: str
    crop_box: tuple[int, int, int, int]
    padded: bool
    laterality: str
    view: str
    flipped: bool
    manufacturer: str
    transfer_syntax: str
    crop_method: str
    crop_size_mm: float
    magnification_view: bool


@dataclass(frozen=True)
class PreprocessedImage:
    """One model-ready crop.

    Attributes:
        grey: float32 (S, S) display values in [0, 1], chest wall on the left, before
            normalisation (what ``aln preprocess --out`` writes).
        provenance: Where it came from.
    """

    grey: npt.NDArray[np.float32]
    provenance: ImageProvenance

    @property
    def tensor(self) -> npt.NDArray[np.float32]:
        """float32 (3, S, S), ImageNet-normalised: the backbone input."""
        return normalise(self.grey)


def preprocess_image(
    data: DicomBytes,
    region: Region,
    spec: CropSpec | None = None,
    options: ImageOptions | None = None,
    *,
    limits: Limits | None = None,
    strategy: DecodeStrategy = "region",
) -> PreprocessedImage:
    """Turn one mammogram and a region on it into a model-ready crop.

    Args:
        data: The encoded DICOM object (bytes, or a view over a buffer: parsed in place).
        region: Lesion centre (and optional bounding box) in stored-pixel coordinates.
        spec: Crop method and sizes (default: 50 mm fixed square, 256 px output).
        options: Caller overrides.
        limits: Resource limits.
        strategy: ``"region"`` (decode only the crop) or ``"full"``; identical results.

    Raises:
        PreprocessingError: Any subclass, naming the tag or argument at fault.
    """
    spec = spec or CropSpec()
    options = options or ImageOptions()
    header = read_header(data, limits, allow_secondary_capture=options.spacing_mm is not None)
    ds = header.dataset
    with malformed_attributes_are_invalid():
        orientation = resolve_orientation(ds, options.laterality, options.view)
        spacing = resolve_spacing(ds, options.spacing_mm, force_caller=header.secondary_capture)
        region.validate(header.rows, header.columns)
        box: Box = crop_box(region, spec, spacing.mm)
        levels = grey_levels_from_dataset(ds, header.bits_stored, header.signed)

    row0, row1, col0, col1 = clip_box(box, header.rows, header.columns)
    stored = decode_window(header, Window(row0, row1, col0, col1), strategy)
    grey, padded = pad_to_box(apply_grey_levels(stored, levels), box, header.rows, header.columns)
    if orientation.flip_horizontal:
        grey = grey[:, ::-1]
    grey = resize(grey, spec.output_size)
    provenance = ImageProvenance(
        spacing_mm=round(spacing.mm, 6),
        spacing_source=spacing.source,
        crop_box=box.as_tuple(),
        padded=padded,
        laterality=orientation.laterality,
        view=orientation.view,
        flipped=orientation.flip_horizontal,
        manufacturer=header.manufacturer,
        transfer_syntax=transfer_syntax_name(header.transfer_syntax_uid),
        crop_method=spec.method,
        crop_size_mm=round((box.x1 - box.x0) * spacing.mm, 3),
        magnification_view=spacing.magnification_view,
    )
    return PreprocessedImage(grey=grey, provenance=provenance)


@dataclass(frozen=True)
class StudyInput:
    """One image of a study as the caller gives it.

    Attributes:
        dicom: The encoded DICOM object. For an auxiliary region on the primary image, pass the
            primary's bytes again.
        region: The region to crop.
        options: Caller overrides for this image.
    """

    dicom: DicomBytes
    region: Region
    options: ImageOptions = field(default_factory=ImageOptions)


@dataclass(frozen=True)
class StudyTensors:
    """Everything the backbones and the fusion head need for one study.

    Attributes:
        primary_image: float32 (3, S, S).
        auxiliary_image: float32 (3, S, S); zeros when absent.
        auxiliary_present: float32 (1,); 1.0 when an auxiliary region was given.
        clinical_vector: float32 (clinical width,).
        provenance: JSON-ready dict: ``model``, ``preprocessing_version``, ``clinical_schema``,
            ``primary`` and ``auxiliary`` image provenance.
    """

    primary_image: npt.NDArray[np.float32]
    auxiliary_image: npt.NDArray[np.float32]
    auxiliary_present: npt.NDArray[np.float32]
    clinical_vector: npt.NDArray[np.float32]
    provenance: dict[str, Any]

    def provenance_json(self) -> bytes:
        """The provenance as compact UTF-8 JSON."""
        return json.dumps(self.provenance, separators=(",", ":"), sort_keys=True).encode()


def preprocess_study(
    primary: StudyInput,
    clinical: bytes | str | dict[str, Any],
    schema: ClinicalSchema,
    spec: CropSpec | None = None,
    auxiliary: StudyInput | None = None,
    *,
    limits: Limits | None = None,
    strategy: DecodeStrategy = "region",
    model_info: dict[str, str] | None = None,
) -> StudyTensors:
    """Preprocess a study: primary crop, optional auxiliary crop, encoded clinical record.

    Args:
        primary: The primary lesion image.
        clinical: The clinical record (JSON bytes/str as sent over the wire, or a dict).
        schema: The checkpoint's clinical schema.
        spec: Crop method (the checkpoint's).
        auxiliary: Optional auxiliary region image.
        limits: Resource limits.
        strategy: Decode strategy (see :func:`preprocess_image`).
        model_info: Model name, version and weights digest to record in the provenance.

    Raises:
        PreprocessingError: Any subclass, naming the input at fault.
    """
    vector = schema.encode(clinical) if isinstance(clinical, dict) else schema.encode_json(clinical)
    first = preprocess_image(
        primary.dicom, primary.region, spec, primary.options, limits=limits, strategy=strategy
    )
    size = first.grey.shape[0]
    provenance: dict[str, Any] = {
        "model": model_info,
        "preprocessing_version": contract.PREPROCESSING_VERSION,
        "clinical_schema": f"{schema.name}@{schema.version}",
        "primary": asdict(first.provenance),
        "auxiliary": None,
    }
    aux_image = np.zeros((contract.IMAGE_CHANNELS, size, size), dtype=np.float32)
    present = np.zeros(1, dtype=np.float32)
    if auxiliary is not None:
        second = preprocess_image(
            auxiliary.dicom,
            auxiliary.region,
            spec,
            auxiliary.options,
            limits=limits,
            strategy=strategy,
        )
        aux_image = second.tensor
        present[0] = 1.0
        provenance["auxiliary"] = asdict(second.provenance)
    return StudyTensors(
        primary_image=first.tensor,
        auxiliary_image=aux_image,
        auxiliary_present=present,
        clinical_vector=vector,
        provenance=provenance,
    )
