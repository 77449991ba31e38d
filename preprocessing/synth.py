r"""Synthetic mammograms with vendor-like headers and a lesion of known size at a known place.

No public data set pairs pre-treatment mammograms with post-NAT nodal status, so tests, the
demo, benchmarks and training use these. Each object is a valid Digital Mammography X-Ray Image
Storage - For Presentation instance (Secondary Capture for digitised film) that passes
``dciodvfy``. Geometry follows ``dicom.md``: GE reports Imager Pixel Spacing 0.0941 mm already at
the breast support (ERMF 1) and a SIGMOID VOI with a VOI LUT Sequence; Hologic reports the 0.07 mm
detector pitch with ERMF 1.07; Siemens 0.085 mm with ERMF 1.08; Fuji 0.05 mm with a calibrated
Pixel Spacing; film is a Secondary Capture with no spacing (the manifest gives it).

The image is drawn in the normalised orientation (chest wall on the left) and then stored in the
vendor's orientation (right breasts mirrored, Patient Orientation ``P\L``), so lesion
coordinates in the manifest are stored-pixel coordinates, as a caller would give them.

Labels: ``label`` follows a documented logistic model of lesion diameter, spiculation and
clinical features (see :func:`label_probability`), so models trained on the cohort can learn and
the AUC of a perfect model is known.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from aln.preprocessing.clinical import ClinicalSchema

Vendor = Literal["ge", "hologic", "siemens", "fuji", "film"]
VENDORS: tuple[Vendor, ...] = ("ge", "hologic", "siemens", "fuji", "film")
TRANSFER_SYNTAXES = ("explicit", "implicit", "jpeg2000", "jpeg2000-lossy", "htj2k", "jpegls", "rle")
HTJ2K_LOSSLESS = UID("1.2.840.10008.1.2.4.201")
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
UID_ROOT = "1.2.826.0.1.3680043.10.1133."  # synthetic objects only


@dataclass(frozen=True)
class VendorProfile:
    """Header geometry and grey-level conventions of one vendor.

    Attributes:
        manufacturer: Manufacturer (0008,0070).
        model: Manufacturer's Model Name (0008,1090).
        shape: Full detector matrix (rows, columns).
        imager_spacing_mm: Imager Pixel Spacing (0018,1164).
        ermf: Estimated Radiographic Magnification Factor (0018,1114).
        bits_stored: Bits Stored (0028,0101).
        voi: ``sigmoid_lut`` (window + SIGMOID + VOI LUT Sequence), ``linear`` (three windows),
            ``linear_exact`` (one window).
        calibrated: Write a calibrated Pixel Spacing (GEOMETRY).
        monochrome1: Store MONOCHROME1.
    """

    manufacturer: str
    model: str
    shape: tuple[int, int]
    imager_spacing_mm: float
    ermf: float
    bits_stored: int
    voi: Literal["sigmoid_lut", "linear", "linear_exact"]
    calibrated: bool = False
    monochrome1: bool = False

    @property
    def spacing_at_breast_mm(self) -> float:
        """What the preprocessing should resolve: IPS / ERMF (or the calibrated value)."""
        return self.imager_spacing_mm / self.ermf


PROFILES: dict[Vendor, VendorProfile] = {
    "ge": VendorProfile(
        "GE MEDICAL SYSTEMS", "Senographe Pristina", (2850, 2394), 0.0941, 1.0, 12, "sigmoid_lut"
    ),
    "hologic": VendorProfile(
        "HOLOGIC, Inc.", "Selenia Dimensions", (4096, 3328), 0.07, 1.07, 12, "linear"
    ),
    "siemens": VendorProfile(
        "Siemens Healthineers",
        "MAMMOMAT Revelation",
        (3518, 2800),
        0.085,
        1.08,
        12,
        "linear_exact",
        monochrome1=False,
    ),
    "fuji": VendorProfile(
        "FUJIFILM Corporation",
        "AMULET Innovality",
        (5928, 4728),
        0.05,
        1.0,
        12,
        "linear",
        calibrated=True,
        monochrome1=True,
    ),
    "film": VendorProfile(
        "Digitised film", "Film digitiser", (4500, 3600), 0.045, 1.0, 12, "linear"
    ),
}


@dataclass(frozen=True)
class SynthCase:
    """One synthetic mammogram and its ground truth (all coordinates in stored pixels).

    Attributes:
        dicom: The encoded DICOM object.
        lesion_centre: ``(x, y)``.
        lesion_bbox: ``(x0, y0, x1, y1)``.
        lesion_diameter_mm: Diameter at the breast.
        auxiliary_centre: ``(x, y)`` of the auxiliary region.
        auxiliary_bbox: ``(x0, y0, x1, y1)`` of the auxiliary region.
        spacing_mm: True millimetres per pixel at the breast.
        laterality: ``L`` or ``R``.
        view: ``CC`` or ``MLO``.
        vendor: Vendor profile name.
        transfer_syntax: Transfer syntax name.
        monochrome1: Stored as MONOCHROME1.
        clinical: Clinical record (schema v1).
        label: 1 when nodes stay positive after NAT.
        spiculated: Lesion margin is spiculated.
        density: Lesion contrast over the parenchyma (display units, 0.2-0.5).
        true_probability: The label's probability under :func:`label_probability`.
        extra: Other ground truth.
    """

    dicom: bytes
    lesion_centre: tuple[float, float]
    lesion_bbox: tuple[float, float, float, float]
    lesion_diameter_mm: float
    auxiliary_centre: tuple[float, float]
    auxiliary_bbox: tuple[float, float, float, float]
    spacing_mm: float
    laterality: str
    view: str
    vendor: str
    transfer_syntax: str
    monochrome1: bool
    clinical: dict[str, Any]
    label: int
    spiculated: bool
    density: float
    true_probability: float
    extra: dict[str, Any] = field(default_factory=dict)


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float
) -> npt.NDArray[np.float32]:
    """Unit-variance Gaussian-filtered noise with correlation length ``scale_px`` (FFT filter)."""
    small = (max(8, math.ceil(shape[0] / 4)), max(8, math.ceil(shape[1] / 4)))
    white = rng.standard_normal(small).astype(np.float32)
    fy = np.fft.fftfreq(small[0])[:, None]
    fx = np.fft.rfftfreq(small[1])[None, :]
    sigma = max(scale_px / 4, 1.0)
    kernel = np.exp(-2 * (math.pi * sigma) ** 2 * (fy**2 + fx**2)).astype(np.float32)
    field_ = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=small).astype(np.float32)
    field_ /= field_.std() + 1e-6
    # Nearest-neighbour upsampling by 4 keeps this cheap on full-size detectors.
    big = np.repeat(np.repeat(field_, 4, axis=0), 4, axis=1)[: shape[0], : shape[1]]
    return np.ascontiguousarray(big)


def label_probability(
    diameter_mm: float, spiculated: bool, density: float, clinical: dict[str, Any]
) -> float:
    """P(nodes positive after NAT) of the synthetic cohort: a documented logistic model.

    logit = -1.2 + 0.08 (diameter_mm - 20) + 1.0 spiculated + 6 (density - 0.35)
            + 0.9 [cN2 or cN3] + 0.7 [ER positive and HER2 0/1+]
            - 0.8 [HER2 3+ with anti-HER2 dual blockade]

    Image terms (size, margin, density: the lesion's contrast over the parenchyma) and clinical
    terms both matter, so neither branch alone reaches the oracle AUC. The label is a Bernoulli
    draw from this probability, which the manifest records as ``true_probability``: the AUC of
    that column is what a perfect model scores on the same cases.
    """
    logit = -1.2 + 0.08 * (diameter_mm - 20.0) + (1.0 if spiculated else 0.0)
    logit += 6.0 * (density - 0.35)
    logit += 0.9 if clinical["cn_stage"] in ("N2", "N3") else 0.0
    logit += (
        0.7
        if clinical["er_status"] == "positive" and clinical["her2_status"] in ("0", "1+")
        else 0.0
    )
    logit -= (
        0.8
        if clinical["her2_status"] == "3+" and clinical["nat_regimen"] == "anti_her2_dual"
        else 0.0
    )
    return 1.0 / (1.0 + math.exp(-logit))


def random_clinical(rng: np.random.Generator, diameter_mm: float) -> dict[str, Any]:
    """A plausible clinical record (schema v1) for a lesion of ``diameter_mm``."""
    her2 = str(rng.choice(["0", "1+", "2+", "3+"], p=[0.35, 0.25, 0.15, 0.25]))
    er = str(rng.choice(["positive", "negative"], p=[0.65, 0.35]))
    pr = "positive" if er == "positive" and rng.random() < 0.8 else "negative"
    if her2 == "3+":
        subtype = "her2_enriched" if er == "negative" else "luminal_b"
    elif er == "negative":
        subtype = "triple_negative"
    else:
        subtype = str(rng.choice(["luminal_a", "luminal_b"]))
    regimen = (
        "anti_her2_dual"
        if her2 == "3+"
        else str(
            rng.choice(["anthracycline_taxane", "taxane_platinum", "other"], p=[0.7, 0.2, 0.1])
        )
    )
    age = float(np.clip(rng.normal(50, 10), 25, 85))
    ct = "T1" if diameter_mm <= 20 else "T2" if diameter_mm <= 50 else "T3"
    return {
        "age_years": round(age, 1),
        "tumour_size_mm": round(float(diameter_mm), 1),
        "ki67_percent": round(float(np.clip(rng.normal(35, 20), 1, 95)), 1),
        "menopausal_status": "post" if age > 51 else "pre",
        "ct_stage": ct,
        "cn_stage": str(rng.choice(["N1", "N2", "N3"], p=[0.6, 0.3, 0.1])),
        "histological_grade": str(rng.choice(["G1", "G2", "G3"], p=[0.1, 0.5, 0.4])),
        "er_status": er,
        "pr_status": pr,
        "her2_status": her2,
        "molecular_subtype": subtype,
        "nat_regimen": regimen,
    }


def _draw_breast(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing_mm: float,
    view: str,
    diameter_mm: float,
    spiculated: bool,
    top: int,
    density: float = 0.35,
) -> tuple[npt.NDArray[np.uint16], tuple[float, float], tuple[float, float], npt.NDArray[np.bool_]]:
    """Draw a breast, chest wall on the left, and a lesion; return stored values and the lesion.

    Returns:
        uint16 (rows, cols) MONOCHROME2 values in [0, top], lesion centre (x, y), lesion radii
        (rx, ry) in pixels, and the breast mask.
    """
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy = rows * rng.uniform(0.45, 0.55)
    depth = cols * rng.uniform(0.7, 0.85)
    half = rows * rng.uniform(0.36, 0.44)
    r2 = (xx / depth) ** 2 + ((yy - cy) / half) ** 2
    breast = r2 < 1.0
    # Skin line falls off smoothly; tissue is brighter near the chest wall.
    edge = np.clip((1.0 - r2) * 8.0, 0.0, 1.0)
    tissue = 0.35 + 0.15 * (1 - xx / depth) + 0.10 * _smooth_noise(rng, shape, 4.0 / spacing_mm)
    tissue += 0.04 * _smooth_noise(rng, shape, 0.8 / spacing_mm)
    image = np.clip(tissue, 0.05, 0.95) * edge
    if view == "MLO":
        pectoral = xx < (cols * 0.35) * (1 - yy / (rows * 0.6))
        image = np.where(pectoral & breast, np.maximum(image, 0.62), image)

    radius = diameter_mm / 2 / spacing_mm
    for _ in range(100):
        lx = rng.uniform(0.25, 0.65) * depth
        ly = cy + rng.uniform(-0.5, 0.5) * half
        if (lx / depth) ** 2 + ((ly - cy) / half) ** 2 < 0.6:
            break
    # Keep the whole lesion inside the image, even on a small field of view.
    lx = float(np.clip(lx, radius * 1.2, cols - radius * 1.2))
    ly = float(np.clip(ly, radius * 1.2, rows - radius * 1.2))
    window = int(radius * 3) + 4
    y0, y1 = max(int(ly) - window, 0), min(int(ly) + window, rows)
    x0, x1 = max(int(lx) - window, 0), min(int(lx) + window, cols)
    sy, sx = yy[y0:y1, x0:x1] - ly, xx[y0:y1, x0:x1] - lx
    angle = np.arctan2(sy, sx)
    wobble = 1.0 + (
        0.35 * np.abs(np.sin(7 * angle + rng.uniform(0, 6)))
        if spiculated
        else 0.05 * np.sin(3 * angle)
    )
    distance = np.sqrt(sx**2 + sy**2) / (radius * wobble)
    mass = np.clip(1.2 - distance, 0.0, 1.0) ** 0.5 * density
    image[y0:y1, x0:x1] = np.clip(image[y0:y1, x0:x1] + mass, 0, 1)
    image = image + rng.normal(0, 0.004, shape).astype(np.float32) * breast
    stored = np.clip(image * top * 0.9 + top * 0.02, 0, top).astype(np.uint16)
    return stored, (float(lx), float(ly)), (float(radius), float(radius)), breast


def _sigmoid_lut(center: float, width: float, bits_in: int) -> list[int]:
    values = np.arange(1 << bits_in, dtype=np.float64)
    table = 65535.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    return [int(v) for v in np.rint(table)]


def _uid(rng: np.random.Generator) -> UID:
    """A UID under the synthetic root, derived from ``rng`` so a seed reproduces the bytes."""
    return generate_uid(UID_ROOT, entropy_srcs=[str(rng.integers(0, 2**63))])


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_dataset(
    profile: VendorProfile,
    stored: npt.NDArray[np.uint16],
    *,
    laterality: str,
    view: str,
    monochrome1: bool,
    calibrated: bool,
    rng: np.random.Generator,
    patient: dict[str, str],
) -> Dataset:
    """Build the header and uncompressed Pixel Data of one synthetic object.

    Args:
        profile: Vendor geometry.
        stored: uint16 (rows, cols) MONOCHROME2 stored values in the stored orientation.
        laterality: ``L`` or ``R``.
        view: ``CC`` or ``MLO``.
        monochrome1: Store MONOCHROME1 (values inverted, same VOI meaning).
        calibrated: Add a calibrated Pixel Spacing.
        rng: Random source for UIDs' suffixes and dates.
        patient: Synthetic PatientName, PatientID, PatientBirthDate, AccessionNumber.
    """
    top = (1 << profile.bits_stored) - 1
    film = profile.manufacturer == "Digitised film"
    sop_class = SECONDARY_CAPTURE if film else MG_FOR_PRESENTATION
    now = datetime(2026, 1, 1 + int(rng.integers(0, 28)), 9, int(rng.integers(0, 60)))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    sop_uid = _uid(rng)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = UID(UID_ROOT + "1")
    ds.file_meta.ImplementationVersionName = "ALN_SYNTH_1"

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = patient["AccessionNumber"]
    ds.Modality = "OT" if film else "MG"
    ds.ConversionType = "DF" if film else None
    if not film:
        ds.AcquisitionDate = ds.ContentDate
        ds.AcquisitionTime = ds.ContentTime
    ds.Manufacturer = profile.manufacturer
    ds.ManufacturerModelName = profile.model
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic mammogram (no clinical content)"
    ds.PatientName = patient["PatientName"]
    ds.PatientID = patient["PatientID"]
    ds.PatientBirthDate = patient["PatientBirthDate"]
    ds.PatientSex = "F"
    ds.StudyInstanceUID = _uid(rng)
    ds.SeriesInstanceUID = _uid(rng)
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = (
        (["A", "R"] if view == "CC" else ["A", "FR"])
        if laterality == "L"
        else (["P", "L"] if view == "CC" else ["P", "FL"])
    )
    ds.ImageLaterality = laterality
    ds.BodyPartExamined = "BREAST"
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["DERIVED", "SECONDARY"] if film else ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = profile.bits_stored
    ds.HighBit = profile.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"

    if not film:
        ds.PositionerType = "MAMMOGRAPHIC"
        ds.OrganExposed = "BREAST"
        ds.Laterality = None
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if monochrome1 else 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
        ds.ImagerPixelSpacing = [profile.imager_spacing_mm, profile.imager_spacing_mm]
        ds.EstimatedRadiographicMagnificationFactor = profile.ermf
        ds.DistanceSourceToDetector = 660
        ds.DistanceSourceToPatient = round(660 / profile.ermf, 1)
        ds.BodyPartThickness = int(rng.integers(35, 70))
        ds.CompressionForce = int(rng.integers(60, 140))
        ds.DetectorType = "DIRECT"
        ds.BreastImplantPresent = "NO"
        ds.PartialView = "NO"
        ds.QualityControlImage = "NO"
        ds.AnatomicRegionSequence = Sequence([_code_item("76752008", "SCT", "Breast")])
        ds.AcquisitionContextSequence = Sequence()
        view_item = (
            _code_item("399162004", "SCT", "cranio-caudal")
            if view == "CC"
            else _code_item("399368009", "SCT", "medio-lateral oblique")
        )
        view_item.ViewModifierCodeSequence = Sequence()
        ds.ViewCodeSequence = Sequence([view_item])
        ds.ViewPosition = view
        ds.KVP = 29
        ds.ExposureInuAs = 90000
        ds.XRayTubeCurrentInuA = 100000
        ds.AnodeTargetMaterial = "TUNGSTEN"
        ds.FilterMaterial = "RHODIUM"
        if calibrated or profile.calibrated:
            spacing = round(profile.spacing_at_breast_mm, 6)
            ds.PixelSpacing = [spacing, spacing]
            ds.PixelSpacingCalibrationType = "GEOMETRY"
            ds.PixelSpacingCalibrationDescription = "Projected to the breast support"
    else:
        ds.ViewPosition = view

    # VOI chosen on the MONOCHROME2 meaning; MONOCHROME1 stores inverted values and windows.
    center, width = top * 0.55, top * 0.8
    if monochrome1:
        center = top - center
    if profile.voi == "sigmoid_lut":
        ds.WindowCenter, ds.WindowWidth = round(center, 1), round(width, 1)
        ds.VOILUTFunction = "SIGMOID"
        lut = Dataset()
        lut.LUTDescriptor = [1 << profile.bits_stored, 0, 16]
        lut.LUTExplanation = "SIGMOID"
        lut.add_new(0x00283006, "US", _sigmoid_lut(center, width, profile.bits_stored))
        ds.VOILUTSequence = Sequence([lut])
    elif profile.voi == "linear_exact":
        ds.WindowCenter, ds.WindowWidth = round(center, 1), round(width, 1)
        ds.VOILUTFunction = "LINEAR_EXACT"
    else:
        ds.WindowCenter = [round(center, 1), round(center, 1), round(center, 1)]
        ds.WindowWidth = [round(width, 1), round(width * 0.8, 1), round(width * 1.2, 1)]
        ds.WindowCenterWidthExplanation = ["NORMAL", "HARDER", "SOFTER"]
        ds.VOILUTFunction = "LINEAR"
    pixels = (top - stored) if monochrome1 else stored
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    # Drop attributes set to None above (type 2C absent).
    for keyword in ("ConversionType", "Laterality"):
        if keyword in ds and ds[keyword].value is None:
            del ds[keyword]
    return ds


def encode(ds: Dataset, transfer_syntax: str, pixels: npt.NDArray[np.uint16]) -> Dataset:
    """Re-encode ``ds`` (uncompressed) in ``transfer_syntax`` (one of :data:`TRANSFER_SYNTAXES`).

    Args:
        ds: Dataset with uncompressed Pixel Data.
        transfer_syntax: Target syntax name.
        pixels: uint16 (rows, cols) the stored values (as in Pixel Data).
    """
    if transfer_syntax == "explicit":
        return ds
    if transfer_syntax == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        return ds
    if transfer_syntax == "jpeg2000":
        ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    elif transfer_syntax == "jpeg2000-lossy":
        ds.compress(JPEG2000, pixels, encoding_plugin="pylibjpeg", j2k_cr=[15])
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = 15
        ds.LossyImageCompressionMethod = "ISO_15444_1"
    elif transfer_syntax == "jpegls":
        ds.compress(JPEGLSLossless, pixels, encoding_plugin="pyjpegls")
    elif transfer_syntax == "rle":
        ds.compress(RLELossless, pixels, encoding_plugin="pydicom")
    elif transfer_syntax == "htj2k":
        import imagecodecs

        ds.PixelData = encapsulate([bytes(imagecodecs.htj2k_encode(pixels))])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = HTJ2K_LOSSLESS
    else:
        raise ValueError(
            f"A transfer syntax of '{transfer_syntax}' is invalid, it must be one of "
            f"{', '.join(TRANSFER_SYNTAXES)}"
        )
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Serialise a dataset as a DICOM Part 10 file."""
    from io import BytesIO

    buffer = BytesIO()
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ds.save_as(buffer, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return buffer.getvalue()


def synth_case(
    rng: np.random.Generator,
    vendor: Vendor = "hologic",
    transfer_syntax: str = "explicit",
    *,
    shape: tuple[int, int] | None = None,
    laterality: str | None = None,
    view: str | None = None,
    monochrome1: bool | None = None,
    calibrated: bool | None = None,
    diameter_mm: float | None = None,
) -> SynthCase:
    """Generate one synthetic mammogram with its ground truth.

    Args:
        rng: Random source (seeded by the caller for reproducibility).
        vendor: Vendor profile.
        transfer_syntax: One of :data:`TRANSFER_SYNTAXES`.
        shape: (rows, cols) instead of the vendor's full detector (same spacing: a smaller field).
        laterality: ``L``/``R``; random when None.
        view: ``CC``/``MLO``; random when None.
        monochrome1: Store MONOCHROME1; the vendor's convention when None.
        calibrated: Add a calibrated Pixel Spacing; the vendor's convention when None.
        diameter_mm: Lesion diameter; random 8-45 mm when None.
    """
    profile = PROFILES[vendor]
    shape = shape or profile.shape
    laterality = laterality or str(rng.choice(["L", "R"]))
    view = view or str(rng.choice(["CC", "MLO"]))
    monochrome1 = profile.monochrome1 if monochrome1 is None else monochrome1
    calibrated = profile.calibrated if calibrated is None else calibrated
    diameter = float(diameter_mm if diameter_mm is not None else rng.uniform(8, 45))
    spiculated = bool(rng.random() < 0.4)
    density = float(rng.uniform(0.2, 0.5))
    spacing = profile.spacing_at_breast_mm
    top = (1 << profile.bits_stored) - 1
    normalised, (lx, ly), (rx, ry), breast = _draw_breast(
        rng, shape, spacing, view, diameter, spiculated, top, density
    )
    # Auxiliary region: a 30 mm square of parenchyma between the lesion and the chest wall.
    aux_half = 15.0 / spacing
    ax = float(max(lx * 0.45, aux_half * 0.5))
    ay = float(np.clip(ly + rng.uniform(-0.2, 0.2) * shape[0], aux_half, shape[0] - aux_half))
    flip = laterality == "R"
    cols = shape[1]
    stored = normalised[:, ::-1] if flip else normalised
    if flip:
        lx, ax = cols - lx, cols - ax
    clinical = random_clinical(rng, diameter)
    probability = label_probability(diameter, spiculated, density, clinical)
    label = int(rng.random() < probability)
    serial = int(rng.integers(10**6, 10**7))
    patient = {
        "PatientName": f"SYNTH^PATIENT{serial}",
        "PatientID": f"SYN{serial}",
        "PatientBirthDate": f"19{int(rng.integers(40, 99))}0101",
        "AccessionNumber": f"ACC{serial}",
    }
    ds = build_dataset(
        profile,
        np.ascontiguousarray(stored),
        laterality=laterality,
        view=view,
        monochrome1=monochrome1,
        calibrated=calibrated,
        rng=rng,
        patient=patient,
    )
    pixels = np.frombuffer(ds.PixelData, "<u2").reshape(shape)
    ds = encode(ds, transfer_syntax, pixels)
    return SynthCase(
        dicom=to_bytes(ds),
        lesion_centre=(round(lx, 2), round(ly, 2)),
        lesion_bbox=(round(lx - rx, 2), round(ly - ry, 2), round(lx + rx, 2), round(ly + ry, 2)),
        lesion_diameter_mm=round(diameter, 2),
        auxiliary_centre=(round(ax, 2), round(ay, 2)),
        auxiliary_bbox=(
            round(ax - aux_half, 2),
            round(ay - aux_half, 2),
            round(ax + aux_half, 2),
            round(ay + aux_half, 2),
        ),
        spacing_mm=spacing,
        laterality=laterality,
        view=view,
        vendor=vendor,
        transfer_syntax=transfer_syntax,
        monochrome1=monochrome1,
        clinical=clinical,
        label=label,
        spiculated=spiculated,
        density=round(density, 4),
        true_probability=round(probability, 6),
        extra={"patient": patient, "breast_fraction": float(breast.mean())},
    )


MANIFEST_COLUMNS = (
    "file",
    "vendor",
    "transfer_syntax",
    "laterality",
    "view",
    "monochrome1",
    "spacing_mm",
    "lesion_x",
    "lesion_y",
    "lesion_x0",
    "lesion_y0",
    "lesion_x1",
    "lesion_y1",
    "lesion_diameter_mm",
    "spiculated",
    "aux_x",
    "aux_y",
    "aux_x0",
    "aux_y0",
    "aux_x1",
    "aux_y1",
    "lesion_density",
    "clinical",
    "label",
    "true_probability",
    "split",
    "centre",
    "override_spacing_mm",
)
COHORT_CENTRES: dict[Vendor, str] = {"hologic": "A", "ge": "B", "siemens": "C", "fuji": "D"}
"""Centres of ``--cohort`` designs: A-C are internal (train/val/test), D is the external test
centre: another vendor, MONOCHROME1, calibrated spacing, another detector pitch."""


def _plan(
    i: int, rng: np.random.Generator, vendor: Vendor | None, cohort: bool
) -> tuple[Vendor, str, str]:
    """Vendor, split and centre of case ``i``."""
    if cohort:
        if rng.random() < 0.2:
            return "fuji", "external", COHORT_CENTRES["fuji"]
        chosen: Vendor = ("hologic", "ge", "siemens")[int(rng.integers(0, 3))]
        split = str(rng.choice(["train", "val", "test"], p=[0.6, 0.2, 0.2]))
        return chosen, split, COHORT_CENTRES[chosen]
    chosen = vendor or VENDORS[i % (len(VENDORS) - 1)]  # film needs a caller spacing: opt-in
    return chosen, str(rng.choice(["train", "val", "test"], p=[0.6, 0.2, 0.2])), chosen


def write_cohort(
    out: Path,
    n: int,
    seed: int = 0,
    vendor: Vendor | None = None,
    transfer_syntax: str = "explicit",
    shape: tuple[int, int] | None = None,
    schema: ClinicalSchema | None = None,
    cohort: bool = False,
) -> Path:
    """Write ``n`` synthetic DICOMs and ``manifest.csv`` into ``out``; return the manifest path.

    Default: vendors cycle (or ``vendor``), split 60/20/20 train/val/test, centre = vendor.
    ``cohort=True``: the multi-centre design of :data:`COHORT_CENTRES`, about 20% external.
    Film cases store no spacing: their ``override_spacing_mm`` is what a caller must pass.
    """
    out.mkdir(parents=True, exist_ok=True)
    schema = schema or ClinicalSchema.load()
    manifest = out / "manifest.csv"
    rng = np.random.default_rng(seed)
    plan_rng = np.random.default_rng(seed + 1)
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        for i in range(n):
            chosen, split, centre = _plan(i, plan_rng, vendor, cohort)
            case = synth_case(rng, chosen, transfer_syntax, shape=shape)
            schema.validate(case.clinical)
            name = f"case{i:05d}_{case.vendor}_{case.laterality}{case.view}.dcm"
            (out / name).write_bytes(case.dicom)
            writer.writerow(
                [
                    name,
                    case.vendor,
                    case.transfer_syntax,
                    case.laterality,
                    case.view,
                    int(case.monochrome1),
                    round(case.spacing_mm, 6),
                    *case.lesion_centre,
                    *case.lesion_bbox,
                    case.lesion_diameter_mm,
                    int(case.spiculated),
                    *case.auxiliary_centre,
                    *case.auxiliary_bbox,
                    case.density,
                    json.dumps(case.clinical, sort_keys=True),
                    case.label,
                    case.true_probability,
                    split,
                    centre,
                    round(case.spacing_mm, 6) if case.vendor == "film" else "",
                ]
            )
    return manifest
