"""The one tensor contract: model names, tensor names, dtypes and shapes.

Export, the model-repository generator, the ``model.py`` adapters, the client and the tests all
import this module, so a name or shape changes in exactly one place. It imports only the standard
library and numpy so that the client-only install can use it.

Shapes are given without the batch dimension, in Triton's convention: ``-1`` is a variable
dimension. Every composing model batches along a leading dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREPROCESSING_VERSION = "1.0.0"
"""Bumped whenever a change to :mod:`aln.preprocessing` can change a crop or a clinical vector."""

IMAGE_SIZE = 256
"""Side of the square crop each backbone sees, in pixels."""

IMAGE_CHANNELS = 3
"""Crops are grey levels replicated to three channels (ImageNet-pretrained backbones)."""

REGION_WIDTH = 6
"""A region tensor holds ``(centre_x, centre_y, x0, y0, x1, y1)`` in stored-pixel coordinates;
the bounding box is NaN when the caller gave only a centre."""

ENSEMBLE = "aln_ensemble"
PREPROCESS = "preprocess"
BACKBONE_PRIMARY = "backbone_primary"
BACKBONE_AUXILIARY = "backbone_auxiliary"
FUSION_HEAD = "fusion_head"


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
"""JSON with caller overrides: ``laterality``, ``view``, ``spacing_mm`` (and the same for
``auxiliary_*``). Never patient data."""

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
FUSION_OUTPUTS = (ALN_LOGIT, ALN_PROBABILITY)
ENSEMBLE_OUTPUTS = (ALN_PROBABILITY, ALN_LOGIT, PROVENANCE)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
