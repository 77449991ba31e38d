"""Bad studies, one per class of bad input, each with the words its error must contain.

Shared by the preprocessing tests and the integration tests (which send each through the
server). Built from one valid synthetic case by editing its header.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pydicom


@dataclass(frozen=True)
class BadStudy:
    name: str
    dicom: bytes
    lesion: tuple[float, float]
    clinical: dict[str, Any] | str
    expected: str | tuple[str, ...]
    bbox: tuple[float, float, float, float] | None = None
    options: dict[str, Any] = field(default_factory=dict)


def edit(dicom: bytes, **changes: Any) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def bad_studies(case) -> list[BadStudy]:
    good, lesion, clinical = case.dicom, case.lesion_centre, case.clinical
    native = as_native(good)

    def study(name, expected, dicom=good, lesion=lesion, clinical=clinical, **kwargs):
        return BadStudy(name, dicom, lesion, clinical, expected, **kwargs)

    return [
        study("not_dicom", "not a DICOM Part 10 file", dicom=b"%PDF-1.7\n" * 100),
        study("truncated", "Pixel Data", dicom=good[: len(good) // 2]),
        study("no_pixel_data", "'Pixel Data' element is missing", dicom=edit(good, PixelData=None)),
        study(
            "unsupported_sop_class",
            "1.2.840.10008.5.1.4.1.1.2' is not supported",
            dicom=edit(good, SOPClassUID="1.2.840.10008.5.1.4.1.1.2"),
        ),
        study(
            "for_processing",
            "FOR PROCESSING",
            dicom=edit(good, PresentationIntentType="FOR PROCESSING"),
        ),
        study(
            "tomosynthesis",
            "Breast Tomosynthesis",
            dicom=edit(good, SOPClassUID="1.2.840.10008.5.1.4.1.1.13.1.3"),
        ),
        study(
            "colour",
            "'Photometric Interpretation' value of 'RGB'",
            dicom=edit(good, PhotometricInterpretation="RGB"),
        ),
        study(
            "bits_stored", "'Bits Stored' value of '17' is invalid", dicom=edit(good, BitsStored=17)
        ),
        study("no_laterality", "No laterality", dicom=edit(good, ImageLaterality=None)),
        study(
            "contradictory_laterality",
            "Contradictory laterality",
            dicom=edit(good, Laterality="R" if case.laterality == "L" else "L"),
        ),
        study("no_view", "No view", dicom=edit(good, ViewCodeSequence=None, ViewPosition=None)),
        study(
            "no_spacing",
            "'Imager Pixel Spacing' are both absent",
            dicom=edit(good, ImagerPixelSpacing=None),
        ),
        study(
            "implausible_spacing",
            "'Imager Pixel Spacing' value of '0.9\\0.9' is implausible",
            dicom=edit(good, ImagerPixelSpacing=[0.9, 0.9]),
        ),
        study(
            "too_many_pixels",
            "above the limit of 36000000",
            dicom=edit(good, Rows=7000, Columns=7000),
        ),
        study("lesion_outside", "is outside the image", lesion=(1e6, 10.0)),
        study("lesion_not_finite", "is not finite", lesion=(float("nan"), 10.0)),
        study("inverted_bbox", "inverted or empty", bbox=(50.0, 50.0, 10.0, 60.0)),
        study(
            "clinical_missing",
            "'age_years' is missing",
            clinical={k: v for k, v in clinical.items() if k != "age_years"},
        ),
        study(
            "clinical_out_of_range",
            "'ki67_percent' has value 250",
            clinical={**clinical, "ki67_percent": 250},
        ),
        study(
            "clinical_wrong_type",
            "'age_years' has value 'fifty' of type str",
            clinical={**clinical, "age_years": "fifty"},
        ),
        study(
            "clinical_unknown_category",
            "'her2_status' has unknown category 'strong'",
            clinical={**clinical, "her2_status": "strong"},
        ),
        study("clinical_not_json", "not valid JSON", clinical="{age: 50"),
        study("bad_override", "laterality override of 'X'", options={"laterality": "X"}),
        # what follows the swallowed bytes decides which check fires first
        study(
            "lying_length",
            ("'Pixel Data' element is missing", "could not be parsed"),
            dicom=lying_length(native),
        ),
        study("deflate_that_does_not_inflate", "could not be parsed", dicom=broken_deflate(native)),
        study(
            "wrong_sized_pixel_data",
            "holds 1000 bytes but",
            dicom=edit(native, PixelData=b"\0" * 1000),
        ),
        study("multi_frame", "'Number of Frames' value of '3'", dicom=edit(good, NumberOfFrames=3)),
        study(
            "secondary_capture_without_spacing",
            "Secondary Capture",
            dicom=edit(good, SOPClassUID="1.2.840.10008.5.1.4.1.1.7"),
        ),
        study(
            "caller_spacing_nan",
            "spacing_mm value of 'nan' is implausible",
            dicom=edit(good, ImagerPixelSpacing=None),
            options={"spacing_mm": float("nan")},
        ),
        study(
            "caller_spacing_inf",
            "spacing_mm value of 'inf' is implausible",
            dicom=edit(good, ImagerPixelSpacing=None),
            options={"spacing_mm": float("inf")},
        ),
        study(
            "caller_spacing_negative",
            "spacing_mm value of '-0.07' is implausible",
            dicom=edit(good, ImagerPixelSpacing=None),
            options={"spacing_mm": -0.07},
        ),
        study("clinical_empty", "clinical record is empty", clinical=""),
        study(
            "clinical_enormous",
            "above the limit of 65536",
            clinical=json.dumps({"note": "x" * 70_000}),
        ),
        study(
            "clinical_unknown_field", "'bmi' is not in schema", clinical={**clinical, "bmi": 22.5}
        ),
    ]


def names_cause(bad: BadStudy, message: str) -> bool:
    """Whether ``message`` contains the (or one of the) expected wordings."""
    expected = (bad.expected,) if isinstance(bad.expected, str) else bad.expected
    return any(words in message for words in expected)


def encapsulated_bad_studies(case) -> list[BadStudy]:
    """Bad studies that need a JPEG 2000 case (compressed pixel data)."""
    good, lesion, clinical = case.dicom, case.lesion_centre, case.clinical
    start = good.index(b"\xff\x4f\xff\x51")  # SOC + SIZ of the codestream
    corrupt = bytearray(good)
    corrupt[start + 47 : start + 60] = b"\xff" * 13  # the COD segment after a valid SIZ
    huge = bytearray(good)
    huge[start + 8 : start + 16] = (60_000).to_bytes(4, "big") * 2
    return [
        BadStudy(
            "jpeg2000_that_does_not_decode",
            bytes(corrupt),
            lesion,
            clinical,
            "could not be decoded",
        ),
        BadStudy(
            "jpeg2000_header_claims_huge_image",
            bytes(huge),
            lesion,
            clinical,
            "codestream is (60000, 60000) with 1 component(s)",
        ),
    ]


def as_native(dicom: bytes) -> bytes:
    """The same object with uncompressed Pixel Data (explicit VR little endian)."""
    ds = pydicom.dcmread(io.BytesIO(dicom))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def lying_length(dicom: bytes) -> bytes:
    """Manufacturer (0008,0070) claims 65520 bytes: the parser swallows what follows."""
    data = bytearray(dicom)
    at = data.index(b"\x08\x00\x70\x00LO")
    data[at + 6 : at + 8] = (0xFFF0).to_bytes(2, "little")
    return bytes(data)


def broken_deflate(dicom: bytes) -> bytes:
    """Deflated Explicit VR Little Endian whose deflate stream is garbage."""
    ds = pydicom.dcmread(io.BytesIO(dicom))
    meta = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()[:meta] + b"\x78\x9c" + bytes(range(256)) * 10


def clinical_json(clinical: dict[str, Any] | str) -> str:
    return clinical if isinstance(clinical, str) else json.dumps(clinical)
