"""A cohort manifest: one row per case, read into typed cases.

Columns (CSV, header row): ``file`` (primary DICOM, relative to the manifest), ``lesion_x``,
``lesion_y``, optional ``lesion_x0 lesion_y0 lesion_x1 lesion_y1`` (bounding box), optional
``aux_file`` (auxiliary DICOM; default the primary), optional ``aux_x aux_y`` and
``aux_x0 aux_y0 aux_x1 aux_y1`` (auxiliary region), ``clinical`` (JSON object of named fields),
``label`` (1 = axillary nodes positive after NAT, 0 = negative), ``split`` (train, val, test or
external), ``centre``; optional ``override_laterality``, ``override_view`` and
``override_spacing_mm`` (header overrides, e.g. the spacing of digitised film). Other columns are
ignored. ``aln synth`` writes this format.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aln.preprocessing.crop import Region
from aln.preprocessing.pipeline import ImageOptions
from aln.training.errors import CohortError

SPLITS = ("train", "val", "test", "external")


@dataclass(frozen=True)
class Case:
    """One study of a cohort.

    Attributes:
        case_id: The primary file name (unique in the manifest).
        primary: Path of the primary DICOM.
        region: Primary lesion region.
        auxiliary: Path of the auxiliary DICOM (the primary when the region lies on it).
        auxiliary_region: Auxiliary region, or None.
        clinical: The clinical record.
        label: 1 or 0.
        split: One of :data:`SPLITS`.
        centre: Acquisition centre.
        options: Header overrides for both images.
    """

    case_id: str
    primary: Path
    region: Region
    auxiliary: Path | None
    auxiliary_region: Region | None
    clinical: dict[str, Any]
    label: int
    split: str
    centre: str
    options: ImageOptions


def _float(row: dict[str, str], key: str, line: int) -> float | None:
    value = (row.get(key) or "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise CohortError(
            f"Manifest line {line}: column '{key}' is '{value}', not a number"
        ) from None


def _region(row: dict[str, str], prefix: str, line: int) -> Region | None:
    x, y = _float(row, f"{prefix}_x", line), _float(row, f"{prefix}_y", line)
    if x is None or y is None:
        return None
    box = [_float(row, f"{prefix}_{k}", line) for k in ("x0", "y0", "x1", "y1")]
    bbox = tuple(box) if all(v is not None and math.isfinite(v) for v in box) else None
    return Region(x, y, bbox)  # type: ignore[arg-type]


def read_cohort(manifest: Path) -> list[Case]:
    """Read and check a cohort manifest.

    Raises:
        CohortError: A missing column or file, a bad label, split or clinical JSON (naming the
            line and column).
    """
    manifest = Path(manifest)
    base = manifest.parent
    cases = []
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        required = {"file", "lesion_x", "lesion_y", "clinical", "label", "split"}
        missing = sorted(required - set(reader.fieldnames or ()))
        if missing:
            raise CohortError(f"Manifest {manifest} lacks column '{missing[0]}'")
        for line, row in enumerate(reader, start=2):
            primary = base / row["file"]
            if not primary.is_file():
                raise CohortError(f"Manifest line {line}: file '{row['file']}' does not exist")
            region = _region(row, "lesion", line)
            if region is None:
                raise CohortError(f"Manifest line {line}: 'lesion_x' and 'lesion_y' are required")
            if row["label"].strip() not in ("0", "1"):
                raise CohortError(
                    f"Manifest line {line}: column 'label' is '{row['label']}', it must be 0 or 1"
                )
            if row["split"] not in SPLITS:
                raise CohortError(
                    f"Manifest line {line}: column 'split' is '{row['split']}', "
                    f"it must be one of {', '.join(SPLITS)}"
                )
            try:
                clinical = json.loads(row["clinical"] or "{}")
            except json.JSONDecodeError as exc:
                raise CohortError(
                    f"Manifest line {line}: column 'clinical' is not JSON: {exc}"
                ) from exc
            aux_region = _region(row, "aux", line)
            aux_file = (row.get("aux_file") or "").strip()
            cases.append(
                Case(
                    case_id=row["file"],
                    primary=primary,
                    region=region,
                    auxiliary=(base / aux_file) if aux_file else (primary if aux_region else None),
                    auxiliary_region=aux_region,
                    clinical=clinical,
                    label=int(row["label"]),
                    split=row["split"],
                    centre=row.get("centre", "") or "",
                    options=ImageOptions(
                        laterality=(row.get("override_laterality") or "").strip() or None,
                        view=(row.get("override_view") or "").strip() or None,
                        spacing_mm=_float(row, "override_spacing_mm", line),
                    ),
                )
            )
    return cases
