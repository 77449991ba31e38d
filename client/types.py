"""Typed requests and results of the client SDK."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.client.errors import AlnClientError
from aln.preprocessing import contract
from aln.preprocessing.decision import Decision, OperatingPoint


@dataclass(frozen=True)
class ImageInput:
    """One mammogram and the region to crop on it.

    Attributes:
        dicom: The encoded DICOM object, or a path to it.
        lesion: ``(x, y)`` centre in stored-pixel coordinates (column, row).
        bbox: Optional ``(x0, y0, x1, y1)`` bounding box in stored pixels.
        laterality: Override when the header lacks or contradicts it (``"L"``/``"R"``).
        view: Override (``"CC"``/``"MLO"``).
        spacing_mm: Millimetres per pixel at the breast when the header has none.
    """

    dicom: bytes | Path | str
    lesion: tuple[float, float]
    bbox: tuple[float, float, float, float] | None = None
    laterality: str | None = None
    view: str | None = None
    spacing_mm: float | None = None

    def dicom_bytes(self) -> bytes:
        """The encoded DICOM (read from disk when a path was given).

        Raises:
            AlnClientError: The file cannot be read.
        """
        if isinstance(self.dicom, bytes | bytearray):
            return bytes(self.dicom)
        try:
            return Path(self.dicom).read_bytes()
        except OSError as exc:
            raise AlnClientError(f"Cannot read DICOM file '{self.dicom}': {exc.strerror}") from exc

    def region(self) -> list[float]:
        """The contract's region values: centre then bounding box (NaN when absent)."""
        return [float(v) for v in contract.pack_region(self.lesion, self.bbox)]

    def options(self) -> dict[str, Any]:
        """Overrides set on this image, keyed as in ``request_options``."""
        return contract.ImageOptions(self.laterality, self.view, self.spacing_mm).as_dict()


@dataclass(frozen=True)
class Study:
    """One study for :meth:`AlnClient.predict_many`.

    Attributes:
        primary: The primary lesion image.
        clinical: The clinical record (named fields) or its JSON text.
        auxiliary: Optional auxiliary region (on another DICOM, or on the primary's).
    """

    primary: ImageInput
    clinical: Mapping[str, Any] | str
    auxiliary: ImageInput | None = None


@dataclass(frozen=True)
class Prediction:
    """The served answer for one study.

    Attributes:
        probability: P(axillary lymph nodes positive after neoadjuvant therapy), calibrated on
            the validation split when the model has a calibration.
        logit: The fusion head's raw logit (before calibration).
        decision: The decision at the model's operating point: ``likely_positive``,
            ``low_risk``, or ``unavailable`` (a model without an operating point: demo or
            uncalibrated weights).
        model_name: Served model name (from the checkpoint).
        model_version: Version of the weights.
        provenance: Model identity and weights digest, preprocessing version, and per image the
            spacing (mm and source), crop box, padding, laterality, view and flip.
        operating_point: The threshold behind ``decision`` and its validated sensitivity,
            specificity, PPV and NPV with Wilson 95% intervals and the prevalence they were
            measured at, read from the served model's configuration; None when the model has
            none (or the server does not publish it).
    """

    probability: float
    logit: float
    decision: Decision
    model_name: str
    model_version: str
    provenance: dict[str, Any] = field(repr=False)
    operating_point: OperatingPoint | None = field(default=None, repr=False)

    @classmethod
    def from_outputs(
        cls, probability: float, logit: float, decision: int, provenance_json: bytes
    ) -> Prediction:
        """Build from the ensemble's output tensors (the operating point is attached later)."""
        provenance = json.loads(provenance_json)
        model = provenance.get("model") or {}
        return cls(
            float(probability),
            float(logit),
            Decision.from_code(int(decision)),
            str(model.get("name", "")),
            str(model.get("version", "")),
            provenance,
        )


@dataclass(frozen=True)
class Explanation:
    """An occlusion-sensitivity map over the primary crop, with the prediction it explains.

    Attributes:
        prediction: The answer for the study (as :meth:`AlnClient.predict` gives it).
        importance: float32 (grid, grid): per cell of the crop, how much the logit fell when the
            cell was hidden; positive cells pushed the answer towards positive nodes. Rows run
            top to bottom of the crop as the backbone saw it (``crop``).
        crop: uint8 (256, 256): the primary crop as the backbone saw it (a right breast's crop
            is mirrored: ``prediction.provenance["primary"]["flipped"]``).
        crop_box: ``(x0, y0, x1, y1)`` of the crop in stored pixels of the primary image.
    """

    prediction: Prediction
    importance: npt.NDArray[np.float32] = field(repr=False)
    crop: npt.NDArray[np.uint8] = field(repr=False)
    crop_box: tuple[int, int, int, int]

    @property
    def grid(self) -> int:
        """Cells per side of the map."""
        return int(self.importance.shape[0])
