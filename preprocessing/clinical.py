"""The clinical record: a versioned schema, field-level validation and a fixed float32 encoding.

A schema is JSON (``schemas/clinical_v1.json`` is the default) listing named fields with a type,
a unit, a range and categories. Every field is required; a categorical field may be ``"unknown"``
(its own one-hot slot). Numeric fields are standardised ``(x - mean) / std``. The schema travels
inside each checkpoint, so the server encodes exactly as training did.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from aln.preprocessing.errors import ClinicalRecordError, ConfigurationError

UNKNOWN = "unknown"
MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClinicalField:
    """One field of the schema.

    Attributes:
        name: Field name as sent by the caller.
        type: ``"numeric"`` or ``"categorical"``.
        unit: Unit of a numeric field.
        min: Smallest allowed numeric value.
        max: Largest allowed numeric value.
        mean: Standardisation mean.
        std: Standardisation standard deviation (> 0).
        categories: Allowed categories (``"unknown"`` is always allowed in addition).
    """

    name: str
    type: Literal["numeric", "categorical"]
    unit: str = ""
    min: float = -math.inf
    max: float = math.inf
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """Number of vector entries this field encodes to."""
        return 1 if self.type == "numeric" else len(self.categories) + 1


@dataclass(frozen=True)
class ClinicalSchema:
    """A versioned clinical schema.

    Attributes:
        name: Schema name.
        version: Schema version (semantic).
        fields: The fields, in encoding order.
    """

    name: str
    version: str
    fields: tuple[ClinicalField, ...]

    @property
    def width(self) -> int:
        """Length of the encoded clinical vector."""
        return sum(f.width for f in self.fields)

    @property
    def feature_names(self) -> list[str]:
        """A name for each vector entry (``field`` or ``field=category``)."""
        names: list[str] = []
        for f in self.fields:
            if f.type == "numeric":
                names.append(f.name)
            else:
                names.extend(f"{f.name}={c}" for c in (*f.categories, UNKNOWN))
        return names

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClinicalSchema:
        """Build from the JSON form.

        Raises:
            ConfigurationError: The schema itself is malformed (naming the field).
        """
        try:
            fields = []
            for raw in data["fields"]:
                kind = raw["type"]
                if kind == "numeric":
                    field = ClinicalField(
                        name=str(raw["name"]),
                        type="numeric",
                        unit=str(raw.get("unit", "")),
                        min=float(raw["min"]),
                        max=float(raw["max"]),
                        mean=float(raw["mean"]),
                        std=float(raw["std"]),
                    )
                    if not field.std > 0:
                        raise ValueError(
                            f"field '{field.name}' has std {field.std}, it must be > 0"
                        )
                elif kind == "categorical":
                    field = ClinicalField(
                        name=str(raw["name"]),
                        type="categorical",
                        categories=tuple(str(c) for c in raw["categories"]),
                    )
                else:
                    raise ValueError(f"field type '{kind}' is not 'numeric' or 'categorical'")
                fields.append(field)
            return cls(name=str(data["name"]), version=str(data["version"]), fields=tuple(fields))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"The clinical schema is malformed: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (round-trips through :meth:`from_dict`)."""
        out: list[dict[str, Any]] = []
        for f in self.fields:
            if f.type == "numeric":
                out.append(
                    {
                        "name": f.name,
                        "type": f.type,
                        "unit": f.unit,
                        "min": f.min,
                        "max": f.max,
                        "mean": f.mean,
                        "std": f.std,
                    }
                )
            else:
                out.append({"name": f.name, "type": f.type, "categories": list(f.categories)})
        return {"name": self.name, "version": self.version, "fields": out}

    @classmethod
    def load(cls, path: str | Path | None = None) -> ClinicalSchema:
        """Load a schema file, or the packaged default when ``path`` is None."""
        if path is None:
            text = (
                resources.files("aln.preprocessing")
                .joinpath("schemas/clinical_v1.json")
                .read_text()
            )
        else:
            text = Path(path).read_text()
        return cls.from_dict(json.loads(text))

    def validate(self, record: Mapping[str, Any]) -> dict[str, float | str]:
        """Check a record field by field and return it normalised (categories as strings).

        Raises:
            ClinicalRecordError: Names the first offending field: missing, unknown, wrong type,
                out of range, or an unknown category.
        """
        if not isinstance(record, Mapping):
            raise ClinicalRecordError(
                "The clinical record must be a JSON object of named fields, "
                f"got {type(record).__name__}"
            )
        known = {f.name for f in self.fields}
        extra = sorted(set(record) - known)
        if extra:
            raise ClinicalRecordError(
                f"Clinical field '{extra[0]}' is not in schema {self.name} {self.version}; "
                f"allowed fields: {', '.join(sorted(known))}",
                field=extra[0],
            )
        clean: dict[str, float | str] = {}
        for f in self.fields:
            if f.name not in record:
                raise ClinicalRecordError(f"Clinical field '{f.name}' is missing", field=f.name)
            value = record[f.name]
            if f.type == "numeric":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ClinicalRecordError(
                        f"Clinical field '{f.name}' has value {value!r} of type "
                        f"{type(value).__name__}, it must be a number ({f.unit})",
                        field=f.name,
                    )
                if not math.isfinite(value) or not f.min <= value <= f.max:
                    raise ClinicalRecordError(
                        f"Clinical field '{f.name}' has value {value!r}, it must be in the range "
                        f"({f.min:g}, {f.max:g}) {f.unit}".rstrip(),
                        field=f.name,
                    )
                clean[f.name] = float(value)
            else:
                allowed = (*f.categories, UNKNOWN)
                if isinstance(value, bool) or not isinstance(value, str | int):
                    raise ClinicalRecordError(
                        f"Clinical field '{f.name}' has value {value!r} of type "
                        f"{type(value).__name__}, it must be one of {', '.join(allowed)}",
                        field=f.name,
                    )
                if str(value) not in allowed:
                    raise ClinicalRecordError(
                        f"Clinical field '{f.name}' has unknown category {value!r}, it must be "
                        f"one of {', '.join(allowed)}",
                        field=f.name,
                    )
                clean[f.name] = str(value)
        return clean

    def encode(self, record: Mapping[str, Any]) -> npt.NDArray[np.float32]:
        """Validate and encode a record.

        Returns:
            float32 (width,): standardised numerics then one-hot categoricals, schema order.

        Raises:
            ClinicalRecordError: See :meth:`validate`.
        """
        clean = self.validate(record)
        vector = np.zeros(self.width, dtype=np.float32)
        i = 0
        for f in self.fields:
            value = clean[f.name]
            if f.type == "numeric":
                vector[i] = (float(value) - f.mean) / f.std
            else:
                allowed = (*f.categories, UNKNOWN)
                vector[i + allowed.index(str(value))] = 1.0
            i += f.width
        return vector

    def encode_json(self, payload: bytes | str) -> npt.NDArray[np.float32]:
        """Parse a JSON record (as sent over the wire) and encode it.

        Raises:
            ClinicalRecordError: Empty, oversized or malformed JSON, or an invalid record.
        """
        if isinstance(payload, str):
            payload = payload.encode()
        if not payload.strip():
            raise ClinicalRecordError(
                "The clinical record is empty; send a JSON object of named fields"
            )
        if len(payload) > MAX_RECORD_BYTES:
            raise ClinicalRecordError(
                f"The clinical record is {len(payload)} bytes, "
                f"above the limit of {MAX_RECORD_BYTES}"
            )
        try:
            record = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ClinicalRecordError(f"The clinical record is not valid JSON: {exc}") from exc
        return self.encode(record)
