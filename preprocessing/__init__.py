"""aln.preprocessing: DICOM mammogram + region + clinical record to model-ready tensors.

numpy + pydicom only (no torch). :mod:`aln.preprocessing.contract` imports nothing but numpy, so
the client-only install can use it; everything else is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClinicalSchema": "clinical",
    "CropSpec": "crop",
    "Region": "crop",
    "CROP_METHODS": "crop",
    "ImageOptions": "contract",
    "ImageProvenance": "pipeline",
    "PreprocessedImage": "pipeline",
    "StudyInput": "pipeline",
    "StudyTensors": "pipeline",
    "preprocess_image": "pipeline",
    "preprocess_study": "pipeline",
    "Limits": "header",
    "PreprocessingError": "errors",
    "InvalidDicomError": "errors",
    "UnsupportedImageError": "errors",
    "SpacingError": "errors",
    "OrientationError": "errors",
    "RegionError": "errors",
    "ClinicalRecordError": "errors",
    "ResourceLimitError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"aln.preprocessing.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'aln.preprocessing' has no attribute '{name}'")
