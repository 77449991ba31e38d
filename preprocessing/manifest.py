"""The checkpoint manifest: what a model promises the server, the trainer and the exporter.

A checkpoint folder holds the weights and ``manifest.json`` (:data:`MANIFEST_FILE`); a served
repository carries the same file beside the ``preprocess`` model. This module is the only parser
of that file. It needs no torch: the Triton ``preprocess`` model, ``aln build-repo`` and the
reference predictor all read manifests with :func:`read_manifest`, and :mod:`aln.model.checkpoint`
adds the checks that need the network (backbone widths, weights).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.preprocessing import contract
from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.crop import CropSpec
from aln.preprocessing.decision import OperatingPoint
from aln.preprocessing.errors import ConfigurationError, InvalidRequestError, ManifestError

MANIFEST_FILE = "manifest.json"
"""The manifest's file name, in a checkpoint, an export folder and a served repository."""
FORMAT_VERSION = 4
"""Version 4 added ``operating_point``, 3 ``calibration``, 2 the typed ``auxiliary`` field; older
manifests are read and migrated."""
UNTRAINED_DEMO = {
    "status": "untrained demo",
    "clinical_validity": "none: demo weights, never trained on patient data",
}


CALIBRATION_METHODS = ("platt", "temperature")
"""``platt``: probability = sigmoid(slope x logit + intercept); ``temperature``: intercept 0."""


@dataclass(frozen=True)
class Calibration:
    """The map from the network's logit to a calibrated probability, fitted after training.

    Attributes:
        method: One of :data:`CALIBRATION_METHODS`.
        slope: Multiplies the logit (1 / temperature); positive, so ranking (AUC) is unchanged.
        intercept: Added after (0 for temperature scaling).
        fitted_on: The split it was fitted on (the validation split).
        cases: How many cases it was fitted on.
    """

    method: str
    slope: float
    intercept: float
    fitted_on: str
    cases: int

    def apply(self, logit: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
        """Calibrated probabilities of raw logits."""
        z = self.slope * np.asarray(logit, dtype=np.float64) + self.intercept
        probability: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
        return probability

    @classmethod
    def from_dict(cls, raw: object, source: str) -> Calibration | None:
        """Check and build the manifest's ``calibration`` (None: uncalibrated).

        Raises:
            ManifestError: Naming the field (``calibration.slope``, ...) and what it must be.
        """
        if raw is None:
            return None
        if not isinstance(raw, dict) or set(raw) != {f.name for f in fields(cls)}:
            raise ManifestError(
                f"Manifest key 'calibration' in {source} is {raw!r}, it must be null or an "
                "object with method, slope, intercept, fitted_on and cases"
            )
        if raw["method"] not in CALIBRATION_METHODS:
            raise ManifestError(
                f"Manifest key 'calibration.method' in {source} is {raw['method']!r}, it must be "
                f"one of {', '.join(CALIBRATION_METHODS)}"
            )
        for name in ("slope", "intercept"):
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ManifestError(
                    f"Manifest key 'calibration.{name}' in {source} is {value!r}, not a number"
                )
            if not math.isfinite(value):
                raise ManifestError(
                    f"Manifest key 'calibration.{name}' in {source} is {value!r}, not finite"
                )
        if raw["slope"] <= 0:
            raise ManifestError(
                f"Manifest key 'calibration.slope' in {source} is {raw['slope']!r}, it must be "
                "above 0 (a slope at or below 0 would reverse or erase the ranking)"
            )
        if raw["method"] == "temperature" and raw["intercept"] != 0:
            raise ManifestError(
                f"Manifest key 'calibration.intercept' in {source} is {raw['intercept']!r}; "
                "temperature scaling has none (0)"
            )
        if not isinstance(raw["fitted_on"], str) or not isinstance(raw["cases"], int):
            raise ManifestError(
                f"Manifest keys 'calibration.fitted_on' and 'calibration.cases' in {source} must "
                "be a split name and a case count"
            )
        return cls(
            raw["method"],
            float(raw["slope"]),
            float(raw["intercept"]),
            raw["fitted_on"],
            raw["cases"],
        )


@dataclass(frozen=True)
class Manifest:
    """What a checkpoint promises about its model.

    Attributes:
        model_name: Name served as the model (e.g. ``aln_swinv2_tiny_window8_256``).
        model_version: Version string of these weights.
        backbone: Backbone name (both branches).
        clinical_schema: The clinical schema (JSON form; :attr:`schema` is the object).
        crop: How crops are cut (:class:`~aln.preprocessing.crop.CropSpec`).
        auxiliary: Whether the model uses its auxiliary-region branch. A model trained without
            it is image-only: the server refuses requests that send an auxiliary region.
        hidden_dim: Fusion-head hidden width.
        training: Training summary, or :data:`UNTRAINED_DEMO`.
        weights_sha256: SHA-256 of the weights file (filled in on save).
        embedding_dim: Backbone embedding width (checked against the backbone on load).
        clinical_dim: Clinical vector width (checked against the schema).
        input_size: Crop side the backbones take.
        normalisation: ImageNet mean and std applied by the preprocessing.
        preprocessing_version: :data:`aln.preprocessing.contract.PREPROCESSING_VERSION`.
        calibration: The logit-to-probability map fitted on validation data, or None
            (uncalibrated: demo weights, checkpoints of earlier versions).
        operating_point: The threshold on the calibrated probability chosen on validation data
            and its validated figures, or None (the served decision is then "unavailable").
            Only a calibrated model has one.
        format_version: Manifest format version.
        created_utc: ISO time of saving.
    """

    model_name: str
    model_version: str
    backbone: str
    clinical_schema: dict[str, Any]
    crop: CropSpec
    auxiliary: bool
    hidden_dim: int
    training: dict[str, Any]
    weights_sha256: str = ""
    embedding_dim: int = 0
    clinical_dim: int = 0
    input_size: int = contract.IMAGE_SIZE
    normalisation: dict[str, list[float]] = field(
        default_factory=lambda: {
            "mean": list(contract.IMAGENET_MEAN),
            "std": list(contract.IMAGENET_STD),
        }
    )
    preprocessing_version: str = contract.PREPROCESSING_VERSION
    calibration: Calibration | None = None
    operating_point: OperatingPoint | None = None
    format_version: int = FORMAT_VERSION
    created_utc: str = ""

    @property
    def schema(self) -> ClinicalSchema:
        """The clinical schema as an object."""
        return ClinicalSchema.from_dict(self.clinical_schema)

    @property
    def identity(self) -> dict[str, str]:
        """The model fields every answer's provenance carries (served and in process alike)."""
        return {
            "name": self.model_name,
            "version": self.model_version,
            "weights_sha256": self.weights_sha256,
            "backbone": self.backbone,
        }

    def check_auxiliary_allowed(self) -> None:
        """Refuse an auxiliary region for a model without an auxiliary branch.

        Raises:
            InvalidRequestError: The model is image-only (``auxiliary`` false), naming the input.
        """
        if not self.auxiliary:
            raise InvalidRequestError(
                f"Input '{contract.AUXILIARY_REGION.name}' was sent, but model {self.model_name} "
                f"{self.model_version} has no auxiliary branch (manifest 'auxiliary' is false); "
                "send the primary image alone"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    def to_json(self) -> str:
        """Pretty JSON, as written to :data:`MANIFEST_FILE`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def with_values(self, **values: Any) -> Manifest:
        """A copy with some fields replaced (e.g. the digest and widths filled in on save)."""
        return replace(self, **values)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "manifest") -> Manifest:
        """Check and build from the JSON form (version 1 is migrated).

        Args:
            raw: The parsed JSON.
            source: Where it came from, for messages (a path).

        Raises:
            ManifestError: Unknown format version, a missing or unknown key, a value of the
                wrong type, an invalid crop spec or schema, or widths that disagree.
        """
        if not isinstance(raw, dict):
            raise ManifestError(f"{source} must hold a JSON object, not {type(raw).__name__}")
        raw = _migrate(dict(raw), source)
        known = {f.name for f in fields(cls)}
        missing = sorted(k for k in known if k not in raw)
        if missing:
            raise ManifestError(f"Manifest key '{missing[0]}' is missing from {source}")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ManifestError(
                f"Manifest key '{unknown[0]}' in {source} is not known to this code"
            )
        for name, kind in _TYPES.items():
            if not isinstance(raw[name], kind) or (kind is int and isinstance(raw[name], bool)):
                raise ManifestError(
                    f"Manifest key '{name}' in {source} is {raw[name]!r}, it must be "
                    f"{_KIND_NAMES[kind]}"
                )
        try:
            if not isinstance(raw["crop"], dict):
                raise ConfigurationError(f"the crop spec is {raw['crop']!r}, not a JSON object")
            crop = CropSpec(**raw["crop"])
            schema = ClinicalSchema.from_dict(raw["clinical_schema"])
        except TypeError as exc:  # an unknown crop key
            raise ManifestError(f"Manifest key 'crop' in {source}: {exc}") from exc
        except ConfigurationError as exc:
            raise ManifestError(f"Manifest {source}: {exc}") from exc
        calibration = Calibration.from_dict(raw["calibration"], source)
        point = OperatingPoint.from_dict(raw["operating_point"], source)
        if point is not None and calibration is None:
            raise ManifestError(
                f"Manifest key 'operating_point' in {source} is set but 'calibration' is null: "
                "the threshold is a calibrated probability, so an uncalibrated model has none"
            )
        manifest = cls(
            **{**raw, "crop": crop, "calibration": calibration, "operating_point": point}
        )
        if manifest.clinical_dim != schema.width:
            raise ManifestError(
                f"Manifest key 'clinical_dim' is {manifest.clinical_dim} but the clinical schema "
                f"{schema.name} {schema.version} encodes {schema.width} values"
            )
        if manifest.input_size != contract.IMAGE_SIZE:
            raise ManifestError(
                f"Manifest key 'input_size' is {manifest.input_size}, this code serves "
                f"{contract.IMAGE_SIZE}"
            )
        return manifest


_TYPES: dict[str, type] = {
    "model_name": str,
    "model_version": str,
    "backbone": str,
    "clinical_schema": dict,
    "auxiliary": bool,
    "hidden_dim": int,
    "training": dict,
    "weights_sha256": str,
    "embedding_dim": int,
    "clinical_dim": int,
    "input_size": int,
    "normalisation": dict,
    "preprocessing_version": str,
}
_KIND_NAMES = {str: "a string", dict: "a JSON object", bool: "true or false", int: "an integer"}


def _migrate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring an older manifest to :data:`FORMAT_VERSION`, or refuse an unknown version."""
    version = raw.get("format_version")
    if version == 1:
        # Version 1 kept the flag in a trained model's config; demo checkpoints served both
        # branches.
        training = raw.get("training")
        config = training.get("config") if isinstance(training, dict) else None
        raw["auxiliary"] = (
            bool(config.get("auxiliary", False)) if isinstance(config, dict) else True
        )
        version = 2
    if version == 2:
        # Version 2 had no calibration: every such model is uncalibrated.
        raw["calibration"] = None
        version = 3
    if version == 3:
        # Version 3 had no operating point: such a model's decision is unavailable.
        raw["operating_point"] = None
        raw["format_version"] = FORMAT_VERSION
    elif version != FORMAT_VERSION:
        raise ManifestError(
            f"Manifest key 'format_version' in {source} is {version!r}, this code reads versions "
            f"1 to {FORMAT_VERSION}"
        )
    return raw


def read_manifest(folder: Path) -> Manifest:
    """Read and check the manifest of a checkpoint, export folder or served model version.

    Args:
        folder: The folder holding :data:`MANIFEST_FILE`.

    Raises:
        ManifestError: Missing file, not JSON, or any check of :meth:`Manifest.from_dict`.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"The folder '{folder}' has no {MANIFEST_FILE}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    return Manifest.from_dict(raw, str(path))
