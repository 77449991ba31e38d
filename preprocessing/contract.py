"""The one tensor contract: model names, tensor names, dtypes and shapes.

Export, the model-repository generator, the ``model.py`` adapters, the client and the tests all
import this module, so a name or shape changes in exactly one place. It imports only the standard
library and numpy so that the client-only install can use it.

Shapes are given without the batch dimension, in Triton's convention: ``-1`` is a variable
dimension. Every composing model batches along a leading dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aln.preprocessing.errors import InvalidRequestError

PREPROCESSING_VERSION = "1.0.0"
"""Bumped whenever a change to :mod:`aln.preprocessing` can change a crop or a clinical vector."""

IMAGE_SIZE = 256
"""Side of the square crop each backbone sees, in pixels."""

IMAGE_CHANNELS = 3
"""Crops are grey levels replicated to three channels (ImageNet-pretrained backbones)."""

REGION_WIDTH = 6
"""A region tensor holds ``(centre_x, centre_y, x0, y0, x1, y1)`` in stored-pixel coordinates;
the bounding box is NaN when the caller gave only a centre (:func:`pack_region`)."""

BBox = tuple[float, float, float, float]


def pack_region(
    centre: Sequence[float], bbox: Sequence[float] | None = None
) -> npt.NDArray[np.float32]:
    """The region tensor of the contract: float32 ``(centre_x, centre_y, x0, y0, x1, y1)``.

    The client, the crop code and the warm-up data all pack regions with this function.

    Args:
        centre: ``(x, y)``: column and row of the centre, stored pixels.
        bbox: ``(x0, y0, x1, y1)`` in stored pixels, or None (packed as four NaN).
    """
    box = tuple(bbox) if bbox is not None else (math.nan,) * 4
    return np.array([centre[0], centre[1], *box], dtype=np.float32)


def unpack_region(
    values: npt.ArrayLike, name: str = "region"
) -> tuple[tuple[float, float], BBox | None]:
    """Read a region tensor back: ``((x, y), bbox or None)``; the one check of its layout.

    Args:
        values: The six values (any shape holding exactly six).
        name: The input's name, for the error message.

    Raises:
        InvalidRequestError: Not six values. (Values are checked against the image later, by
            :meth:`aln.preprocessing.crop.Region.validate`.)
    """
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size != REGION_WIDTH:
        raise InvalidRequestError(
            f"Input '{name}' has {array.size} values, it must hold {REGION_WIDTH} (centre_x, "
            "centre_y, x0, y0, x1, y1; bounding box NaN when absent)"
        )
    box = array[2:]
    bbox = (
        None
        if np.isnan(box).all()
        else (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    )
    return (float(array[0]), float(array[1])), bbox


ENSEMBLE = "aln_ensemble"
PREPROCESS = "preprocess"
BACKBONE_PRIMARY = "backbone_primary"
BACKBONE_AUXILIARY = "backbone_auxiliary"
FUSION_HEAD = "fusion_head"
EXPLAIN = "aln_explain"
"""The explanation model: occlusion sensitivity over the primary crop, computed with the served
engines through business-logic scripting (:mod:`aln.serving.occlusion`)."""


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of the contract.

    Attributes:
        name: Tensor name, lower_snake_case, saying what it holds.
        dtype: Triton data type name (``TYPE_`` prefix omitted), e.g. ``"FP32"``, ``"UINT8"``.
        dims: Shape without the batch dimension; ``-1`` marks a variable dimension. A ``0``
            stands for a width that depends on the checkpoint (embedding or clinical width) and is
            filled in by :func:`resolve_dims`.
        optional: Whether a request may omit it.
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def numpy_dtype(self) -> np.dtype[np.generic]:
        """The numpy dtype that carries this tensor (``object`` for BYTES)."""
        return np.dtype(_NUMPY_DTYPES[self.dtype])

    def resolve_dims(self, widths: dict[str, int]) -> tuple[int, ...]:
        """Return ``dims`` with checkpoint-dependent widths (``0``) filled in.

        Args:
            widths: Maps tensor name to its width for tensors whose ``dims`` is ``(0,)``.

        Raises:
            KeyError: A checkpoint-dependent tensor has no width in ``widths``.
        """
        if 0 not in self.dims:
            return self.dims
        return tuple(widths[self.name] if d == 0 else d for d in self.dims)


_NUMPY_DTYPES = {"FP32": "float32", "UINT8": "uint8", "BYTES": "object", "INT32": "int32"}

# Ensemble inputs (what the client sends).
PRIMARY_DICOM = TensorSpec("primary_dicom", "UINT8", (-1,))
PRIMARY_REGION = TensorSpec("primary_region", "FP32", (REGION_WIDTH,))
AUXILIARY_DICOM = TensorSpec("auxiliary_dicom", "UINT8", (-1,), optional=True)
AUXILIARY_REGION = TensorSpec("auxiliary_region", "FP32", (REGION_WIDTH,), optional=True)
CLINICAL_RECORD = TensorSpec("clinical_record", "BYTES", (1,))
REQUEST_OPTIONS = TensorSpec("request_options", "BYTES", (1,), optional=True)
"""JSON with caller overrides per image: ``{"primary": {...}, "auxiliary": {...}}``, each with
``laterality``, ``view`` and ``spacing_mm`` (:data:`OPTION_KEYS`). The auxiliary image inherits
the primary's overrides only when it is the same DICOM (no ``auxiliary_dicom`` sent). Never
patient data."""
IMAGE_KEYS = ("primary", "auxiliary")
"""The top-level keys of ``request_options``."""
OPTION_KEYS = ("laterality", "view", "spacing_mm")
"""The overrides one image may carry (the fields of :class:`ImageOptions`)."""


@dataclass(frozen=True)
class ImageOptions:
    """Caller overrides for one image (never patient data).

    Attributes:
        laterality: ``"L"`` or ``"R"`` when the header lacks or contradicts it.
        view: ``"CC"`` or ``"MLO"`` when the header lacks or contradicts it.
        spacing_mm: Millimetres per pixel at the breast, used when the header has no spacing
            (and required for Secondary Capture).
    """

    laterality: str | None = None
    view: str | None = None
    spacing_mm: float | None = None

    def as_dict(self) -> dict[str, str | float]:
        """The overrides that are set, keyed as in ``request_options``."""
        values = {"laterality": self.laterality, "view": self.view, "spacing_mm": self.spacing_mm}
        return {k: v for k, v in values.items() if v is not None}


def auxiliary_options(
    primary: ImageOptions, auxiliary: ImageOptions, *, same_dicom: bool
) -> ImageOptions:
    """The overrides the auxiliary image is preprocessed with: the one rule for every caller.

    The auxiliary image keeps each override it sets itself. It inherits the primary's overrides
    for the rest only when it is the same DICOM object: an override describes one image's header
    (an MLO on another file must not take the primary's ``view="CC"``). The server, training,
    evaluation and the command line all resolve overrides with this function.

    Args:
        primary: The primary image's overrides.
        auxiliary: The auxiliary image's own overrides.
        same_dicom: Whether the auxiliary region lies on the primary's DICOM object.
    """
    if not same_dicom:
        return auxiliary
    return ImageOptions(
        laterality=auxiliary.laterality if auxiliary.laterality is not None else primary.laterality,
        view=auxiliary.view if auxiliary.view is not None else primary.view,
        spacing_mm=auxiliary.spacing_mm if auxiliary.spacing_mm is not None else primary.spacing_mm,
    )


# Preprocess outputs = backbone and fusion inputs.
PRIMARY_IMAGE = TensorSpec("primary_image", "FP32", (IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE))
AUXILIARY_IMAGE = TensorSpec("auxiliary_image", "FP32", (IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE))
AUXILIARY_PRESENT = TensorSpec("auxiliary_present", "FP32", (1,))
CLINICAL_VECTOR = TensorSpec("clinical_vector", "FP32", (0,))
PROVENANCE = TensorSpec("provenance", "BYTES", (1,))

# Backbone engines: one image in, one embedding out (same names for both backbones' graphs).
BACKBONE_INPUT = TensorSpec("image", "FP32", (IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE))
BACKBONE_OUTPUT = TensorSpec("embedding", "FP32", (0,))
PRIMARY_EMBEDDING = TensorSpec("primary_embedding", "FP32", (0,))
AUXILIARY_EMBEDDING = TensorSpec("auxiliary_embedding", "FP32", (0,))

# Fusion head outputs = ensemble outputs (with provenance).
ALN_LOGIT = TensorSpec("aln_logit", "FP32", (1,))
ALN_PROBABILITY = TensorSpec("aln_probability", "FP32", (1,))
ALN_DECISION = TensorSpec("aln_decision", "INT32", (1,))
"""The decision at the model's operating point: the codes of :mod:`aln.preprocessing.decision`."""

ENSEMBLE_INPUTS = (
    PRIMARY_DICOM,
    PRIMARY_REGION,
    AUXILIARY_DICOM,
    AUXILIARY_REGION,
    CLINICAL_RECORD,
    REQUEST_OPTIONS,
)
PREPROCESS_OUTPUTS = (
    PRIMARY_IMAGE,
    AUXILIARY_IMAGE,
    AUXILIARY_PRESENT,
    CLINICAL_VECTOR,
    PROVENANCE,
)
FUSION_INPUTS = (PRIMARY_EMBEDDING, AUXILIARY_EMBEDDING, AUXILIARY_PRESENT, CLINICAL_VECTOR)
FUSION_OUTPUTS = (ALN_LOGIT, ALN_PROBABILITY, ALN_DECISION)
ENSEMBLE_OUTPUTS = (ALN_PROBABILITY, ALN_LOGIT, ALN_DECISION, PROVENANCE)

# The explanation model: the ensemble's inputs and the grid, its answer and the map.
EXPLAIN_GRID = TensorSpec("explain_grid", "INT32", (1,), optional=True)
"""Cells per side of the occlusion grid (default and bounds in :mod:`aln.serving.occlusion`)."""
EXPLANATION_MAP = TensorSpec("explanation_map", "FP32", (-1, -1))
"""Per cell, the logit the prediction loses when the cell is hidden (rows top to bottom of the
crop as the backbone saw it: a right breast's crop is mirrored, see ``provenance``)."""
EXPLANATION_CROP = TensorSpec("explanation_crop", "UINT8", (IMAGE_SIZE, IMAGE_SIZE))
"""The primary crop as the backbone saw it, 8-bit grey, for drawing the map over."""
EXPLANATION_BOX = TensorSpec("explanation_box", "INT32", (4,))
"""The crop's ``(x0, y0, x1, y1)`` in stored pixels of the primary image (half-open)."""
EXPLAIN_INPUTS = (*ENSEMBLE_INPUTS, EXPLAIN_GRID)
EXPLAIN_OUTPUTS = (
    EXPLANATION_MAP,
    EXPLANATION_CROP,
    EXPLANATION_BOX,
    *ENSEMBLE_OUTPUTS,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
