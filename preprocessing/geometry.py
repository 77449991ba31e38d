"""Physical geometry of a mammogram: spacing at the breast, laterality, view and orientation.

Millimetres mean millimetres at the breast support. Imager Pixel Spacing is at the detector and
never corrected for magnification (PS3.3 C.8.11.4); dividing it by the Estimated Radiographic
Magnification Factor (PS3.3 C.8.11.7) projects it to the breast support. Pixel Spacing is "in
the patient" only when calibrated (PS3.3 10.7.1.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset

from aln.preprocessing.errors import OrientationError, SpacingError, tag_label

SpacingSource = Literal["calibrated", "imager_ermf", "uncalibrated", "caller"]
Laterality = Literal["L", "R"]
View = Literal["CC", "MLO"]

MIN_SPACING_MM = 0.02
MAX_SPACING_MM = 0.2
_ERMF_RANGE = (1.0, 2.0)
_MAGNIFICATION_ERMF = 1.4

# View Code Sequence (0054,0220) codes, SNOMED CT and the retired SNOMED-RT (PS3.16 CID 4014).
_VIEW_CODES: dict[str, View] = {
    "399162004": "CC",
    "R-10242": "CC",
    "399368009": "MLO",
    "R-10226": "MLO",
}
_MAGNIFICATION_MODIFIERS = {"R-102D6", "399163009", "R-102D2", "399055006"}


@dataclass(frozen=True)
class Spacing:
    """Pixel spacing at the breast.

    Attributes:
        mm: Millimetres per pixel, isotropic (row and column spacing averaged when they differ
            by under 1%).
        source: Which rule of the resolution order gave it.
        magnification_view: The header says this is a magnification view.
    """

    mm: float
    source: SpacingSource
    magnification_view: bool = False


def _pair(ds: Dataset, keyword: str, tag: int) -> tuple[float, float] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        items = value if isinstance(value, list | tuple) or hasattr(value, "append") else [value]
        values = [float(v) for v in items]
    except (TypeError, ValueError) as exc:
        raise SpacingError(f"A {tag_label(tag)} value of '{value}' is not numeric") from exc
    if len(values) != 2:
        raise SpacingError(
            f"A {tag_label(tag)} value of '{value}' is invalid, it must hold two values "
            "(row spacing, column spacing)"
        )
    return values[0], values[1]


def _isotropic(pair: tuple[float, float], keyword: str, tag: int) -> float:
    row, col = pair
    for v in pair:
        if not math.isfinite(v) or not MIN_SPACING_MM <= v <= MAX_SPACING_MM:
            raise SpacingError(
                f"A {tag_label(tag)} value of '{row}\\{col}' is implausible, each value "
                f"must be in the range ({MIN_SPACING_MM}, {MAX_SPACING_MM}) mm"
            )
    if abs(row - col) > 0.01 * max(row, col):
        raise SpacingError(
            f"A {tag_label(tag)} value of '{row}\\{col}' is anisotropic; "
            "mammograms have square pixels"
        )
    return (row + col) / 2


def check_caller_spacing(spacing_mm: float) -> float:
    """Validate a spacing given by the caller.

    Raises:
        SpacingError: Not finite or outside the plausible range.
    """
    if not math.isfinite(spacing_mm) or not MIN_SPACING_MM <= spacing_mm <= MAX_SPACING_MM:
        raise SpacingError(
            f"A spacing_mm value of '{spacing_mm}' is implausible, it must be in the range "
            f"({MIN_SPACING_MM}, {MAX_SPACING_MM}) mm"
        )
    return float(spacing_mm)


def _is_magnification(ds: Dataset, ermf: float) -> bool:
    if ermf >= _MAGNIFICATION_ERMF:
        return True
    for view in ds.get("ViewCodeSequence", []):
        for modifier in view.get("ViewModifierCodeSequence", []):
            if str(modifier.get("CodeValue", "")) in _MAGNIFICATION_MODIFIERS:
                return True
    return False


def resolve_spacing(
    ds: Dataset, caller_mm: float | None = None, *, force_caller: bool = False
) -> Spacing:
    """Resolve millimetres per pixel at the breast.

    Order (``dicom.md``): 1. Pixel Spacing when calibrated (Pixel Spacing Calibration Type
    present, or Pixel Spacing differs from Imager Pixel Spacing); 2. Imager Pixel Spacing divided
    by the Estimated Radiographic Magnification Factor (used when within 1.0-2.0, else 1.0);
    3. Pixel Spacing, marked uncalibrated; 4. the caller's spacing; else refuse.

    Args:
        ds: The image dataset.
        caller_mm: A spacing supplied by the caller, used when the header has none.
        force_caller: Use ``caller_mm`` even when the header has a spacing (Secondary Capture,
            or an explicit override).

    Raises:
        SpacingError: No usable spacing, or an implausible one.
    """
    header_has_spacing = any(k in ds for k in ("PixelSpacing", "ImagerPixelSpacing"))
    if force_caller or (caller_mm is not None and not header_has_spacing):
        if caller_mm is None:
            raise SpacingError(
                "This object has no reliable pixel spacing; the caller must give spacing_mm"
            )
        return Spacing(check_caller_spacing(caller_mm), "caller")

    ps = _pair(ds, "PixelSpacing", 0x00280030)
    ips = _pair(ds, "ImagerPixelSpacing", 0x00181164)
    ermf_raw = ds.get("EstimatedRadiographicMagnificationFactor")
    try:
        ermf = float(ermf_raw) if ermf_raw not in (None, "") else 1.0
    except (TypeError, ValueError):
        ermf = 1.0
    if not math.isfinite(ermf) or not _ERMF_RANGE[0] <= ermf <= _ERMF_RANGE[1]:
        ermf = 1.0
    magnification = _is_magnification(ds, ermf)

    calibrated = ps is not None and (
        bool(ds.get("PixelSpacingCalibrationType")) or (ips is not None and ps != ips)
    )
    if ps is not None and calibrated:
        return Spacing(_isotropic(ps, "PixelSpacing", 0x00280030), "calibrated", magnification)
    if ips is not None:
        mm = _isotropic(ips, "ImagerPixelSpacing", 0x00181164) / ermf
        return Spacing(check_caller_spacing(mm), "imager_ermf", magnification)
    if ps is not None:
        return Spacing(_isotropic(ps, "PixelSpacing", 0x00280030), "uncalibrated", magnification)
    raise SpacingError(
        f"No usable pixel spacing: {tag_label(0x00280030)} and "
        f"{tag_label(0x00181164)} are both absent; give spacing_mm"
    )


@dataclass(frozen=True)
class Orientation:
    """Laterality, view and the flip that puts the chest wall on the left (column 0).

    Attributes:
        laterality: ``"L"`` or ``"R"``.
        view: ``"CC"`` or ``"MLO"``.
        flip_horizontal: The stored image must be mirrored left-right.
        laterality_source: Tag keyword (or ``"caller"``) the laterality came from.
        view_source: Tag keyword (or ``"caller"``) the view came from.
    """

    laterality: Laterality
    view: View
    flip_horizontal: bool
    laterality_source: str
    view_source: str


def _laterality(ds: Dataset, override: str | None) -> tuple[Laterality, str]:
    if override is not None:
        value = override.strip().upper()
        if value not in ("L", "R"):
            raise OrientationError(
                f"A laterality override of '{override}' is invalid, it must be L or R"
            )
        return value, "caller"  # type: ignore[return-value]
    image = str(ds.get("ImageLaterality", "") or "").strip().upper()
    series = str(ds.get("Laterality", "") or "").strip().upper()
    image = image if image in ("L", "R") else ""
    series = series if series in ("L", "R") else ""
    if image and series and image != series:
        raise OrientationError(
            f"Contradictory laterality: {tag_label(0x00200062)} is '{image}' but "
            f"{tag_label(0x00200060)} is '{series}'; give a laterality override"
        )
    if image:
        return image, "ImageLaterality"  # type: ignore[return-value]
    if series:
        return series, "Laterality"  # type: ignore[return-value]
    raise OrientationError(
        f"No laterality: {tag_label(0x00200062)} and "
        f"{tag_label(0x00200060)} are missing or not L/R; give a laterality override"
    )


def _view(ds: Dataset, override: str | None) -> tuple[View, str]:
    if override is not None:
        value = override.strip().upper()
        if value not in ("CC", "MLO"):
            raise OrientationError(
                f"A view override of '{override}' is invalid, it must be CC or MLO"
            )
        return value, "caller"  # type: ignore[return-value]
    coded: View | None = None
    for item in ds.get("ViewCodeSequence", [])[:1]:
        code = str(item.get("CodeValue", "")).strip()
        coded = _VIEW_CODES.get(code)
        if coded is None:
            raise OrientationError(
                f"A {tag_label(0x00540220)} code of '{code}' is not a CC or "
                "MLO view (SCT 399162004 / 399368009); give a view override"
            )
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    positional: View | None = position if position in ("CC", "MLO") else None  # type: ignore[assignment]
    if coded and positional and coded != positional:
        raise OrientationError(
            f"Contradictory view: {tag_label(0x00540220)} says '{coded}' but "
            f"{tag_label(0x00185101)} is '{position}'; give a view override"
        )
    if coded:
        return coded, "ViewCodeSequence"
    if positional:
        return positional, "ViewPosition"
    raise OrientationError(
        f"No view: {tag_label(0x00540220)} is absent and "
        f"{tag_label(0x00185101)} is '{position}', not CC or MLO; give a view override"
    )


def resolve_orientation(
    ds: Dataset, laterality: str | None = None, view: str | None = None
) -> Orientation:
    """Resolve laterality, view and the horizontal flip that puts the chest wall on the left.

    Laterality: Image Laterality (0020,0062), then Laterality (0020,0060). View: View Code
    Sequence (0054,0220), then View Position (0018,5101). The row direction of Patient
    Orientation (0020,0020) points from the chest wall to the nipple when it is ``A``; a ``P``
    means the chest wall is on the right and the image is mirrored. Without Patient Orientation
    the hanging convention is assumed (right breasts stored with the chest wall on the right).

    Args:
        ds: The image dataset.
        laterality: Caller override, ``"L"`` or ``"R"``.
        view: Caller override, ``"CC"`` or ``"MLO"``.

    Raises:
        OrientationError: Missing or contradictory laterality or view with no override.
    """
    lat, lat_source = _laterality(ds, laterality)
    v, view_source = _view(ds, view)
    orientation = ds.get("PatientOrientation")
    row_direction = ""
    if orientation is not None and len(orientation) == 2:
        row_direction = str(orientation[0]).strip().upper()
    # A row direction towards posterior means the chest wall is on the right.
    flip = row_direction.startswith("P") if row_direction[:1] in ("A", "P") else lat == "R"
    return Orientation(lat, v, flip, lat_source, view_source)
