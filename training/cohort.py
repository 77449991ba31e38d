"""A cohort manifest: one row per case, read into typed cases.

Columns (CSV, header row): ``file`` (primary DICOM, relative to the manifest), ``lesion_x``,
``lesion_y``, optional ``lesion_x0 lesion_y0 lesion_x1 lesion_y1`` (bounding box), optional
``aux_file`` (auxiliary DICOM; default the primary), optional ``aux_x aux_y`` and
``aux_x0 aux_y0 aux_x1 aux_y1`` (auxiliary region), ``clinical`` (JSON object of named fields),
``label`` (1 = axillary nodes positive after NAT, 0 = negative), ``split`` (train, val, test or
external), ``centre``; optional ``override_laterality``, ``override_view`` and
``override_spacing_mm`` (header overrides of the primary image, e.g. the spacing of digitised
film) and ``aux_override_*`` (the auxiliary image's own). The auxiliary image inherits the
primary's overrides only when it lies on the same file
(:func:`aln.preprocessing.contract.auxiliary_options`). Other columns are ignored. The column
names are defined here once; ``aln synth`` (:mod:`aln.synthetic.cohort`) writes this format.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aln.preprocessing import contract
from aln.preprocessing.contract import ImageOptions
from aln.preprocessing.crop import Region
from aln.training.errors import CohortError

MANIFEST_NAME = "manifest.csv"
"""The file name of a cohort manifest inside a study folder (``aln synth`` writes it there)."""
TRAIN, VALIDATION, TEST, EXTERNAL = "train", "val", "test", "external"
SPLITS = (TRAIN, VALIDATION, TEST, EXTERNAL)
"""The splits of a labelled cohort manifest's ``split`` column."""
UNLABELLED = "unlabelled"
"""The split of cases read with ``labelled=False``."""

FILE = "file"
AUX_FILE = "aux_file"
CLINICAL = "clinical"
LABEL = "label"
SPLIT = "split"
CENTRE = "centre"
LESION = "lesion"
"""Prefix of the primary lesion's region columns."""
AUXILIARY = "aux"
"""Prefix of the auxiliary region's columns."""
OVERRIDES = "override_"
"""Prefix of the primary image's override columns."""
AUX_OVERRIDES = "aux_override_"
"""Prefix of the auxiliary image's override columns."""


def region_columns(prefix: str) -> tuple[str, ...]:
    """``prefix_x, prefix_y, prefix_x0, prefix_y0, prefix_x1, prefix_y1`` (centre, then box)."""
    return tuple(f"{prefix}_{k}" for k in ("x", "y", "x0", "y0", "x1", "y1"))


def override_columns(prefix: str) -> tuple[str, ...]:
    """One column per override (:data:`aln.preprocessing.contract.OPTION_KEYS`)."""
    return tuple(prefix + key for key in contract.OPTION_KEYS)


REQUIRED_COLUMNS = (FILE, *region_columns(LESION)[:2], CLINICAL, LABEL, SPLIT)


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
        options: Header overrides of the primary image.
        auxiliary_own_options: The auxiliary image's own overrides (see :attr:`auxiliary_options`).
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
    auxiliary_own_options: ImageOptions = field(default_factory=ImageOptions)

    @property
    def auxiliary_options(self) -> ImageOptions:
        """The overrides the auxiliary image is preprocessed with (the one rule)."""
        return contract.auxiliary_options(
            self.options, self.auxiliary_own_options, same_dicom=self.auxiliary == self.primary
        )


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
    x_key, y_key, *box_keys = region_columns(prefix)
    x, y = _float(row, x_key, line), _float(row, y_key, line)
    if x is None or y is None:
        return None
    box = [_float(row, key, line) for key in box_keys]
    bbox = tuple(box) if all(v is not None and math.isfinite(v) for v in box) else None
    return Region(x, y, bbox)  # type: ignore[arg-type]


def _options(row: dict[str, str], prefix: str, line: int) -> ImageOptions:
    laterality, view, spacing = override_columns(prefix)
    return ImageOptions(
        laterality=(row.get(laterality) or "").strip() or None,
        view=(row.get(view) or "").strip() or None,
        spacing_mm=_float(row, spacing, line),
    )


def read_cohort(manifest: Path, *, labelled: bool = True) -> list[Case]:
    """Read and check a cohort manifest.

    Args:
        manifest: The CSV file.
        labelled: Require ``label`` and ``split`` (training, evaluation). A list of studies with
            lesion positions only (calibration crops) passes ``False``: a row without a valid
            label and split gets label 0 and split ``"unlabelled"`` (a labelled row keeps both),
            and ``clinical`` may be absent.

    Raises:
        CohortError: A missing column or file, a bad label, split or clinical JSON (naming the
            line and column).
    """
    manifest = Path(manifest)
    base = manifest.parent
    cases = []
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        required = REQUIRED_COLUMNS if labelled else (FILE, *region_columns(LESION)[:2])
        missing = sorted(set(required) - set(reader.fieldnames or ()))
        if missing:
            raise CohortError(f"Manifest {manifest} lacks column '{missing[0]}'")
        for line, row in enumerate(reader, start=2):
            primary = base / row[FILE]
            if not primary.is_file():
                raise CohortError(f"Manifest line {line}: file '{row[FILE]}' does not exist")
            region = _region(row, LESION, line)
            if region is None:
                x_key, y_key = region_columns(LESION)[:2]
                raise CohortError(f"Manifest line {line}: '{x_key}' and '{y_key}' are required")
            has_label = (row.get(LABEL) or "").strip() in ("0", "1") and row.get(SPLIT) in SPLITS
            if not labelled and not has_label:
                row = {**row, LABEL: "0", SPLIT: UNLABELLED}
            if row[LABEL].strip() not in ("0", "1"):
                raise CohortError(
                    f"Manifest line {line}: column '{LABEL}' is '{row[LABEL]}', it must be 0 or 1"
                )
            if row[SPLIT] not in (*SPLITS, UNLABELLED) or (labelled and row[SPLIT] == UNLABELLED):
                raise CohortError(
                    f"Manifest line {line}: column '{SPLIT}' is '{row[SPLIT]}', "
                    f"it must be one of {', '.join(SPLITS)}"
                )
            try:
                clinical = json.loads(row.get(CLINICAL) or "{}")
            except json.JSONDecodeError as exc:
                raise CohortError(
                    f"Manifest line {line}: column '{CLINICAL}' is not JSON: {exc}"
                ) from exc
            aux_region = _region(row, AUXILIARY, line)
            aux_file = (row.get(AUX_FILE) or "").strip()
            cases.append(
                Case(
                    case_id=row[FILE],
                    primary=primary,
                    region=region,
                    auxiliary=(base / aux_file) if aux_file else (primary if aux_region else None),
                    auxiliary_region=aux_region,
                    clinical=clinical,
                    label=int(row[LABEL]),
                    split=row[SPLIT],
                    centre=row.get(CENTRE, "") or "",
                    options=_options(row, OVERRIDES, line),
                    auxiliary_own_options=_options(row, AUX_OVERRIDES, line),
                )
            )
    return cases
