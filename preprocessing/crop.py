"""Crop methods, padding and the one resampling used everywhere.

All boxes are in stored-pixel coordinates (the grid of the DICOM Pixel Data, before any flip),
which is the grid lesion coordinates from the caller are given in. Boxes are half-open:
``(x0, y0, x1, y1)`` covers columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``.

The four methods are the four the paper compared:

* ``fixed_mm`` (default): a square of ``size_mm`` at the breast, centred on the lesion centre;
* ``fixed_px``: a square of ``size_px`` stored pixels, centred on the lesion centre;
* ``lesion_bbox``: the lesion's bounding box, made square around its centre;
* ``lesion_bbox_margin``: the bounding box grown by ``margin_mm`` on every side, made square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from aln.preprocessing import contract
from aln.preprocessing.errors import ConfigurationError, RegionError

CropMethod = Literal["fixed_mm", "fixed_px", "lesion_bbox", "lesion_bbox_margin"]
CROP_METHODS: tuple[CropMethod, ...] = ("fixed_mm", "fixed_px", "lesion_bbox", "lesion_bbox_margin")
MIN_CROP_PX = 8
"""Smallest crop side, in pixels (stored or output)."""


@dataclass(frozen=True)
class CropSpec:
    """How a crop is cut and resized; stored in every checkpoint's manifest.

    Attributes:
        method: One of :data:`CROP_METHODS`.
        size_mm: Side of the ``fixed_mm`` square, millimetres at the breast.
        size_px: Side of the ``fixed_px`` square, stored pixels.
        margin_mm: Margin added on every side for ``lesion_bbox_margin``.
        output_size: Side of the resized crop the backbone sees.
    """

    method: CropMethod = "fixed_mm"
    size_mm: float = 50.0
    size_px: int = 512
    margin_mm: float = 5.0
    output_size: int = contract.IMAGE_SIZE

    def __post_init__(self) -> None:
        if self.method not in CROP_METHODS:
            raise ConfigurationError(
                f"A crop method of '{self.method}' is invalid, "
                f"it must be one of {', '.join(CROP_METHODS)}"
            )
        for name in ("size_mm", "margin_mm"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "size_mm" and value <= 0):
                kind = "a positive number" if name == "size_mm" else "a number >= 0"
                raise ConfigurationError(
                    f"A crop {name} of '{value}' is invalid, it must be {kind}"
                )
        for name in ("size_px", "output_size"):
            if getattr(self, name) < MIN_CROP_PX:
                raise ConfigurationError(
                    f"A crop {name} of '{getattr(self, name)}' is invalid, it must be at least "
                    f"{MIN_CROP_PX} pixels"
                )


@dataclass(frozen=True)
class Region:
    """A lesion (or auxiliary region) in stored-pixel coordinates.

    Attributes:
        centre_x: Column of the centre.
        centre_y: Row of the centre.
        bbox: ``(x0, y0, x1, y1)`` bounding box, or ``None`` when only a centre is known.
    """

    centre_x: float
    centre_y: float
    bbox: tuple[float, float, float, float] | None = None

    @classmethod
    def from_array(cls, values: npt.ArrayLike, name: str = "region") -> Region:
        """Build from the contract's region tensor (``contract.unpack_region``).

        Raises:
            InvalidRequestError: Not six values (naming the input ``name``).
        """
        (x, y), bbox = contract.unpack_region(values, name)
        return cls(x, y, bbox)

    def to_array(self) -> npt.NDArray[np.float32]:
        """The contract's region tensor (:func:`~aln.preprocessing.contract.pack_region`)."""
        return contract.pack_region((self.centre_x, self.centre_y), self.bbox)

    def validate(self, rows: int, columns: int) -> None:
        """Check the region against an image of ``rows`` x ``columns``.

        Raises:
            RegionError: Non-finite values, centre outside the image, or an inverted or
                non-finite bounding box.
        """
        cx, cy = self.centre_x, self.centre_y
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise RegionError(f"The lesion centre ({cx}, {cy}) is not finite")
        if not (0 <= cx < columns and 0 <= cy < rows):
            raise RegionError(
                f"The lesion centre ({cx}, {cy}) is outside the image, it must lie in "
                f"[0, {columns}) x [0, {rows}) (x = column, y = row, stored pixels)"
            )
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if not all(math.isfinite(v) for v in self.bbox):
                raise RegionError(f"The bounding box {self.bbox} has non-finite values")
            if x1 <= x0 or y1 <= y0:
                raise RegionError(
                    f"The bounding box ({x0}, {y0}, {x1}, {y1}) is inverted or empty, it must "
                    "have x0 < x1 and y0 < y1"
                )
            if x1 <= 0 or y1 <= 0 or x0 >= columns or y0 >= rows:
                raise RegionError(
                    f"The bounding box ({x0}, {y0}, {x1}, {y1}) lies outside the "
                    f"{columns} x {rows} image"
                )


@dataclass(frozen=True)
class Box:
    """A half-open square box in stored-pixel coordinates (may reach outside the image)."""

    x0: int
    y0: int
    x1: int
    y1: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``."""
        return self.x0, self.y0, self.x1, self.y1

    def mirrored(self, columns: int) -> Box:
        """The same box after a left-right flip of an image ``columns`` wide."""
        return Box(columns - self.x1, self.y0, columns - self.x0, self.y1)


def crop_box(region: Region, spec: CropSpec, spacing_mm: float) -> Box:
    """The square crop box for ``region`` under ``spec``.

    Args:
        region: The lesion, validated.
        spec: The crop method and sizes.
        spacing_mm: Millimetres per stored pixel at the breast.

    Raises:
        RegionError: A box-based method without a bounding box.
    """
    cx, cy = region.centre_x, region.centre_y
    if spec.method == "fixed_mm":
        side = spec.size_mm / spacing_mm
    elif spec.method == "fixed_px":
        side = float(spec.size_px)
    else:
        if region.bbox is None:
            raise RegionError(
                f"Crop method '{spec.method}' needs the lesion's bounding box (x0, y0, x1, y1), "
                f"but the region at ({cx}, {cy}) has only a centre"
            )
        x0, y0, x1, y1 = region.bbox
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = max(x1 - x0, y1 - y0)
        if spec.method == "lesion_bbox_margin":
            side += 2 * spec.margin_mm / spacing_mm
    side_px = max(MIN_CROP_PX, round(side))
    left = math.floor(cx - side_px / 2 + 0.5)
    top = math.floor(cy - side_px / 2 + 0.5)
    return Box(left, top, left + side_px, top + side_px)


def clip_box(box: Box, rows: int, columns: int) -> tuple[int, int, int, int]:
    """The part of ``box`` inside the image: ``(row0, row1, col0, col1)``, possibly empty."""
    return (max(box.y0, 0), min(box.y1, rows), max(box.x0, 0), min(box.x1, columns))


def pad_to_box(
    inside: npt.NDArray[np.float32], box: Box, rows: int, columns: int, background: float = 0.0
) -> tuple[npt.NDArray[np.float32], bool]:
    """Place the decoded inside part of ``box`` into a full box, padding with background.

    Args:
        inside: float32 (h, w), the clipped part of the box in display values.
        box: The full box.
        rows: Image rows.
        columns: Image columns.
        background: Value for pixels outside the image (display black).

    Returns:
        float32 (side, side) and whether any padding was needed.
    """
    row0, row1, col0, col1 = clip_box(box, rows, columns)
    side_y, side_x = box.y1 - box.y0, box.x1 - box.x0
    if (row0, row1, col0, col1) == (box.y0, box.y1, box.x0, box.x1):
        return inside, False
    out = np.full((side_y, side_x), background, dtype=np.float32)
    out[row0 - box.y0 : row1 - box.y0, col0 - box.x0 : col1 - box.x0] = inside
    return out, True


@lru_cache(maxsize=64)
def _resample_matrix(n_in: int, n_out: int) -> npt.NDArray[np.float32]:
    """Anti-aliased linear (triangle) resampling weights, float32 (n_out, n_in).

    The triangle filter is widened by the scale factor when shrinking, the same rule as PIL's
    BILINEAR resize with reducing_gap=None, so every output pixel averages all input pixels it
    covers; rows are normalised to sum to 1.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    positions = np.arange(n_in) + 0.5
    distance = np.abs(positions[None, :] - centres[:, None]) / support
    weights = np.clip(1.0 - distance, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def resize(image: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.float32]:
    """Resize a square crop to ``size`` x ``size`` with one anti-aliased resampling.

    This is the only resampling on the path from DICOM to tensor; training, the reference
    predictor and the server all call it.

    Args:
        image: float32 (h, w) display values.
        size: Output side.

    Returns:
        float32 (size, size).
    """
    rows = _resample_matrix(image.shape[0], size)
    cols = _resample_matrix(image.shape[1], size)
    # OpenBLAS sums in an order that depends on its thread count; one thread makes the crop
    # bit-identical in every process (the Triton backend, training, the reference predictor).
    with _blas_controller().limit(limits=1, user_api="blas"):
        return np.ascontiguousarray(rows @ image.astype(np.float32) @ cols.T)


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # deferred: the CLI imports CROP_METHODS

    return ThreadpoolController()


def normalise(grey: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Replicate a grey crop to three channels and apply ImageNet normalisation.

    Args:
        grey: float32 (h, w) in [0, 1].

    Returns:
        float32 (3, h, w), ``(grey - mean[c]) / std[c]`` per channel.
    """
    mean = np.asarray(contract.IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(contract.IMAGENET_STD, dtype=np.float32)[:, None, None]
    out: npt.NDArray[np.float32] = ((grey[None, :, :] - mean) / std).astype(np.float32)
    return out
