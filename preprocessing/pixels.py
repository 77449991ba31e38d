"""The grey-level pipeline: stored values to display values in [0, 1].

Order (PS3.3 C.11, the grayscale pipeline): modality LUT (C.11.1) -> VOI LUT (C.11.2) ->
MONOCHROME1 inversion -> scaling to [0, 1]. Every step is pointwise, so applying the pipeline to
a decoded region equals applying it to the full image and cropping afterwards; that is what
makes region decoding exact.

The parameters are read from the header once (:func:`grey_levels_from_dataset`) and applied by
:func:`apply_grey_levels`, so a Triton instance never re-parses them per pixel block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from aln.preprocessing.errors import InvalidDicomError, tag_label

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]


@dataclass(frozen=True)
class WindowVOI:
    """A VOI window (PS3.3 C.11.2.1.2).

    Attributes:
        center: Window Center (0028,1050), first value.
        width: Window Width (0028,1051), first value; at least 1 (LINEAR) or above 0.
        function: VOI LUT Function (0028,1056).
    """

    center: float
    width: float
    function: VoiFunction = "LINEAR"


@dataclass(frozen=True)
class LutVOI:
    """A VOI LUT from the VOI LUT Sequence (0028,3010), first item (PS3.3 C.11.2.1.1).

    Attributes:
        first_mapped: Second value of LUT Descriptor: the first input value mapped.
        table: float64 (n,) LUT Data.
        output_bits: Third value of LUT Descriptor: bits of the LUT's output.
    """

    first_mapped: int
    table: npt.NDArray[np.float64]
    output_bits: int


@dataclass(frozen=True)
class GreyLevels:
    """Everything needed to turn stored values into [0, 1] display values.

    Attributes:
        slope: Rescale Slope (0028,1053), 1 when absent.
        intercept: Rescale Intercept (0028,1052), 0 when absent.
        voi: The VOI transform (LUT Sequence preferred, else first window, else the full
            modality range as a linear window).
        invert: True for MONOCHROME1.
    """

    slope: float
    intercept: float
    voi: WindowVOI | LutVOI
    invert: bool


def _first(value: object) -> float:
    if isinstance(value, MultiValue | list | tuple):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


def grey_levels_from_dataset(ds: Dataset, bits_stored: int, signed: bool) -> GreyLevels:
    """Read the modality and VOI parameters from a dataset.

    Args:
        ds: The image dataset.
        bits_stored: Bits Stored (0028,0101), already validated.
        signed: Pixel Representation (0028,0103) is 1.

    Raises:
        InvalidDicomError: A window width below its allowed minimum, or a malformed LUT.
    """
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    voi: WindowVOI | LutVOI
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        item = ds.VOILUTSequence[0]
        try:
            n, first, out_bits = (int(v) for v in item.LUTDescriptor)
        except (AttributeError, TypeError, ValueError) as exc:
            raise InvalidDicomError(
                f"{tag_label(0x00283002)} of the first VOI LUT Sequence item "
                "must hold three integers"
            ) from exc
        raw = item.LUTData
        table = np.asarray(
            raw if isinstance(raw, MultiValue | list) else np.frombuffer(raw, "<u2"),
            dtype=np.float64,
        )
        n = n or 65536  # PS3.3 C.11.2.1.1: 0 means 2^16 entries
        if table.size != n:
            raise InvalidDicomError(
                f"{tag_label(0x00283006)} has {table.size} entries but "
                f"{tag_label(0x00283002)} declares {n}"
            )
        if not 8 <= out_bits <= 16:
            raise InvalidDicomError(
                f"A {tag_label(0x00283002)} third value of '{out_bits}' is invalid, it must be in "
                "the range (8, 16) bits (PS3.3 C.11.2.1.1)"
            )
        voi = LutVOI(first_mapped=first, table=table, output_bits=out_bits)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise InvalidDicomError(
                f"A {tag_label(0x00281056)} value of '{function}' is invalid, "
                "it must be LINEAR, LINEAR_EXACT or SIGMOID"
            )
        minimum = 1.0 if function == "LINEAR" else 0.0
        if not np.isfinite(width) or width < minimum or (minimum == 0.0 and width <= 0):
            raise InvalidDicomError(
                f"A {tag_label(0x00281051)} value of '{width}' is invalid, "
                f"it must be {'at least 1' if minimum else 'above 0'} for {function}"
            )
        voi = WindowVOI(center=center, width=width, function=function)  # type: ignore[arg-type]
    else:
        # No VOI in the header: window the whole modality range linearly.
        lo = -(1 << (bits_stored - 1)) if signed else 0
        hi = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
        lo_m, hi_m = sorted((lo * slope + intercept, hi * slope + intercept))
        voi = WindowVOI(center=(lo_m + hi_m) / 2 + 0.5, width=hi_m - lo_m + 1, function="LINEAR")
    invert = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    return GreyLevels(slope=slope, intercept=intercept, voi=voi, invert=invert)


def apply_window(values: npt.NDArray[np.float64], voi: WindowVOI) -> npt.NDArray[np.float64]:
    """Apply a VOI window, giving values in [0, 1].

    Implements the three VOI LUT Functions of PS3.3 C.11.2.1.2 with the output range fixed to
    [0, 1] (``ymin = 0``, ``ymax = 1``).

    Args:
        values: float64, any shape; modality values.
        voi: The window.
    """
    c, w = voi.center, voi.width
    if voi.function == "SIGMOID":
        return cast(npt.NDArray[np.float64], 1.0 / (1.0 + np.exp(-4.0 * (values - c) / w)))
    if voi.function == "LINEAR_EXACT":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0)
    return np.clip((values - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0)


def apply_lut(values: npt.NDArray[np.float64], voi: LutVOI) -> npt.NDArray[np.float64]:
    """Apply a VOI LUT, giving values in [0, 1] (inputs outside the LUT clamp to its ends).

    Args:
        values: float64, any shape; modality values.
        voi: The LUT.
    """
    index = np.clip(np.rint(values - voi.first_mapped), 0, voi.table.size - 1).astype(np.intp)
    top = float((1 << voi.output_bits) - 1)
    return cast(npt.NDArray[np.float64], np.clip(voi.table[index] / max(top, 1.0), 0.0, 1.0))


def apply_grey_levels(
    stored: npt.NDArray[np.integer[Any]], levels: GreyLevels
) -> npt.NDArray[np.float32]:
    """Turn stored pixel values into display values in [0, 1].

    MONOCHROME1 is inverted after VOI against the fixed top of the output range (``1 - x``), not
    the image maximum, so the result does not depend on image content.

    Args:
        stored: integer (rows, columns) stored values (``pixel_array`` or a decoded region).
        levels: Parameters from :func:`grey_levels_from_dataset`.

    Returns:
        float32 (rows, columns) in [0, 1], brighter = denser tissue.
    """
    values = stored.astype(np.float64)
    if levels.slope != 1.0 or levels.intercept != 0.0:
        values = values * levels.slope + levels.intercept
    if isinstance(levels.voi, LutVOI):
        out = apply_lut(values, levels.voi)
    else:
        out = apply_window(values, levels.voi)
    if levels.invert:
        out = 1.0 - out
    return out.astype(np.float32)
