"""Read a DICOM object and check that it is a mammogram this model can use.

Checks happen before any pixel is decoded, so a hostile header (a huge image, a colour object, a
tomosynthesis volume) is refused at the cost of parsing its header only.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError as PydicomInvalidDicomError

from aln.preprocessing.errors import (
    InvalidDicomError,
    ResourceLimitError,
    UnsupportedImageError,
    is_fatal,
    tag_label,
)

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SECONDARY_CAPTURE_GREY_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.7.2"
_TOMOSYNTHESIS = {
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
}
_FOR_PROCESSING = {MG_FOR_PROCESSING, DX_FOR_PROCESSING}
NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2": "implicit",
    "1.2.840.10008.1.2.1": "explicit",
}
"""Uncompressed transfer syntaxes (UID -> short name): their Pixel Data is sliced, not decoded."""
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFER_BYTES = 1 << 16
"""Elements longer than this are skipped while parsing and read when first used; native pixel
data is never read by pydicom at all but sliced from the input (:attr:`ImageHeader.pixel_data`)."""

DicomBytes = bytes | bytearray | memoryview
"""An encoded DICOM object: bytes, or a view over a buffer the caller owns (a served request's
input tensor), which is parsed where it lies."""


class BufferReader(io.RawIOBase):
    """A seekable binary file over a buffer, copying only what is read from it.

    ``io.BytesIO`` copies any buffer that is not ``bytes``; pydicom reads headers through this
    instead, so a 26 MB input is never duplicated to parse a few kilobytes of attributes.

    Args:
        data: The buffer (bytes, bytearray, memoryview or anything with the buffer protocol).
    """

    def __init__(self, data: DicomBytes) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._position = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Always seekable."""
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Copy the next bytes into ``buffer``; returns how many (0 at the end)."""
        target = memoryview(buffer).cast("B")
        chunk = self._view[self._position : self._position + len(target)]
        target[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` from the start, the current position or the end."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        """The current position."""
        return self._position


@dataclass(frozen=True)
class Limits:
    """Resource limits that keep a hostile file from exhausting memory or time.

    Attributes:
        max_bytes: Largest accepted encoded object, in bytes.
        max_pixels: Largest accepted rows x columns x frames.
    """

    max_bytes: int = 128 * 1024 * 1024
    max_pixels: int = 6000 * 6000


@dataclass(frozen=True)
class ImageHeader:
    """The validated facts about one mammogram, read before decoding pixels.

    Attributes:
        dataset: The parsed dataset (pixel data still encoded).
        sop_class_uid: SOP Class UID (0008,0016).
        transfer_syntax_uid: Transfer Syntax UID (0002,0010).
        rows: Rows (0028,0010).
        columns: Columns (0028,0011).
        bits_allocated: Bits Allocated (0028,0100).
        bits_stored: Bits Stored (0028,0101).
        signed: Pixel Representation (0028,0103) is 1.
        photometric: Photometric Interpretation (0028,0004).
        manufacturer: Manufacturer (0008,0070), "" when absent.
        secondary_capture: The object is a Secondary Capture (needs caller spacing).
        pixel_data: Native (uncompressed) pixel data as a view into the input, without a copy;
            None for encapsulated pixel data, which the decoders read from ``dataset``.
    """

    dataset: Dataset
    sop_class_uid: str
    transfer_syntax_uid: str
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    manufacturer: str
    secondary_capture: bool
    pixel_data: memoryview | None = None


def _required_int(ds: Dataset, tag: int, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise InvalidDicomError(f"The {tag_label(tag)} element is missing or empty")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidDicomError(
            f"A {tag_label(tag)} value of '{value}' is invalid, it must be an integer"
        ) from exc


def parse_dicom(data: DicomBytes, limits: Limits | None = None) -> Dataset:
    """Parse DICOM bytes into a dataset without decoding pixels.

    Every element is read and converted here, inside the guard, except defined-length native
    Pixel Data, which stays a deferred element (see :func:`native_pixel_data`).

    Args:
        data: The encoded Part 10 file, as bytes or a view over a caller's buffer.
        limits: Resource limits; defaults to :class:`Limits`.

    Raises:
        ResourceLimitError: The object is larger than ``limits.max_bytes``.
        InvalidDicomError: The bytes are not DICOM, or are truncated.
    """
    limits = limits or Limits()
    if len(data) > limits.max_bytes:
        raise ResourceLimitError(
            f"The DICOM object is {len(data)} bytes, above the limit of {limits.max_bytes} bytes"
        )
    if len(data) < 132 or bytes(data[128:132]) != b"DICM":
        raise InvalidDicomError(
            "The input is not a DICOM Part 10 file: no 'DICM' prefix at byte 128 "
            f"({len(data)} bytes received)"
        )
    try:
        with warnings.catch_warnings():
            # pydicom warns (and logs) about every oddity of a hostile file, sometimes quoting
            # values: keep that out of server logs; what matters is raised below.
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BufferReader(data), force=False, defer_size=_DEFER_BYTES)
            # pydicom converts element values lazily: convert them all here, inside the guard,
            # so a malformed value cannot surface later as an arbitrary error type.
            ds.file_meta  # noqa: B018
            native = str(ds.file_meta.get("TransferSyntaxUID", "")) in NATIVE_SYNTAXES
            for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset converts every element)
                if tag == _PIXEL_DATA and native:
                    continue
                element = ds[tag]
                if element.VR == "SQ":
                    for item in element.value:
                        for nested in item.iterall():
                            nested.value  # noqa: B018
    except PydicomInvalidDicomError as exc:
        raise InvalidDicomError(f"The DICOM object could not be parsed: {exc}") from exc
    except BaseException as exc:  # hostile bytes reach zlib, struct and codecs inside pydicom
        if is_fatal(exc):
            raise
        raise InvalidDicomError(
            f"The DICOM object could not be parsed ({type(exc).__name__}): {exc}"
        ) from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise InvalidDicomError(
            f"The {tag_label(0x00020010)} element is missing from the file meta information"
        )
    return ds


def read_header(
    data: DicomBytes, limits: Limits | None = None, *, allow_secondary_capture: bool = False
) -> ImageHeader:
    """Parse and validate a mammogram's header.

    Accepts Digital Mammography X-Ray Image Storage - For Presentation, DX For Presentation of
    the breast, and (only when ``allow_secondary_capture``) Secondary Capture. Refuses For
    Processing, tomosynthesis and breast projection objects, colour, multi-frame and malformed
    pixel descriptions, each with the reason.

    Args:
        data: The encoded DICOM object (bytes, or a view over the caller's buffer).
        limits: Resource limits; defaults to :class:`Limits`.
        allow_secondary_capture: Accept Secondary Capture (the caller supplies the spacing).

    Raises:
        InvalidDicomError: Unreadable, truncated, or a required attribute is missing/malformed.
        UnsupportedImageError: A valid object this model cannot use.
        ResourceLimitError: Beyond ``limits``.
    """
    limits = limits or Limits()
    ds = parse_dicom(data, limits)
    sop = str(ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", "")))
    _check_sop_class(ds, sop, allow_secondary_capture)
    if "PixelData" not in ds:
        raise InvalidDicomError(f"The {tag_label(0x7FE00010)} element is missing")

    rows = _required_int(ds, 0x00280010, "Rows")
    columns = _required_int(ds, 0x00280011, "Columns")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows < 1 or columns < 1:
        raise InvalidDicomError(
            f"The image is {rows} x {columns} pixels, it must be at least 1 x 1"
        )
    if rows * columns * frames > limits.max_pixels:
        raise ResourceLimitError(
            f"The image is {rows} x {columns} x {frames} (rows x columns x frames) = "
            f"{rows * columns * frames} pixels, above the limit of {limits.max_pixels}"
        )
    if frames != 1:
        raise UnsupportedImageError(
            f"A {tag_label(0x00280008)} value of '{frames}' is not supported, "
            "only single-frame images are"
        )
    samples = _required_int(ds, 0x00280002, "SamplesPerPixel")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedImageError(
            f"A {tag_label(0x00280004)} value of '{photometric}' "
            f"with {samples} sample(s) per pixel is not supported, it must be MONOCHROME1 or "
            "MONOCHROME2 with 1 sample per pixel"
        )
    bits_allocated = _required_int(ds, 0x00280100, "BitsAllocated")
    if bits_allocated not in (8, 16):
        raise InvalidDicomError(
            f"A {tag_label(0x00280100)} value of '{bits_allocated}' is not "
            "supported, it must be 8 or 16"
        )
    bits_stored = _required_int(ds, 0x00280101, "BitsStored")
    if not 1 <= bits_stored <= bits_allocated:
        raise InvalidDicomError(
            f"A {tag_label(0x00280101)} value of '{bits_stored}' is invalid, it "
            f"must be in the range (1, {bits_allocated})"
        )
    representation = int(ds.get("PixelRepresentation", 0) or 0)
    if representation not in (0, 1):
        raise InvalidDicomError(
            f"A {tag_label(0x00280103)} value of '{representation}' is invalid, it must be 0 or 1"
        )
    return ImageHeader(
        pixel_data=native_pixel_data(ds, data),
        dataset=ds,
        sop_class_uid=sop,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=representation == 1,
        photometric=photometric,
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        secondary_capture=sop in (SECONDARY_CAPTURE, SECONDARY_CAPTURE_GREY_MULTIFRAME),
    )


def native_pixel_data(ds: Dataset, data: DicomBytes) -> memoryview | None:
    """Native Pixel Data of ``ds`` as a view into ``data``, the buffer it was parsed from.

    None when the element was read by pydicom (encapsulated, or short enough not to be deferred);
    the view is shorter than the element's length when the input is truncated, which the decoder
    reports.
    """
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.value is not None:
        return None
    if raw.length == _UNDEFINED_LENGTH or raw.value_tell is None:
        return None
    return memoryview(data).cast("B")[raw.value_tell : raw.value_tell + raw.length]


def _check_sop_class(ds: Dataset, sop: str, allow_secondary_capture: bool) -> None:
    label = tag_label(0x00080016)
    if sop in _TOMOSYNTHESIS:
        raise UnsupportedImageError(
            f"A {label} value of '{sop}' ({_TOMOSYNTHESIS[sop]}) is not supported: the model "
            "takes 2D full-field mammograms (Digital Mammography X-Ray Image - For Presentation)"
        )
    intent = str(ds.get("PresentationIntentType", "")).strip().upper()
    if sop in _FOR_PROCESSING or intent == "FOR PROCESSING":
        raise UnsupportedImageError(
            f"The object is 'FOR PROCESSING' (raw detector data; {label} '{sop}', "
            f"{tag_label(0x00080068)} '{intent}'): the model was trained "
            "on 'FOR PRESENTATION' images; send the processed image from the archive"
        )
    if sop == MG_FOR_PRESENTATION:
        return
    if sop == DX_FOR_PRESENTATION:
        body_part = str(ds.get("BodyPartExamined", "")).strip().upper()
        if body_part != "BREAST":
            raise UnsupportedImageError(
                f"A DX For Presentation object is accepted only of the breast, but "
                f"{tag_label(0x00180015)} is '{body_part}'"
            )
        return
    if sop in (SECONDARY_CAPTURE, SECONDARY_CAPTURE_GREY_MULTIFRAME):
        if allow_secondary_capture:
            return
        raise UnsupportedImageError(
            f"A {label} value of '{sop}' (Secondary Capture) has no reliable pixel spacing; it is "
            "accepted only with an explicit spacing from the caller (spacing_mm)"
        )
    raise UnsupportedImageError(
        f"A {label} value of '{sop}' is not supported, it must be Digital Mammography X-Ray "
        f"Image Storage - For Presentation ({MG_FOR_PRESENTATION}) or DX For Presentation "
        f"({DX_FOR_PRESENTATION}) of the breast"
    )
