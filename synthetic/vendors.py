"""Vendor encodings of a synthetic mammogram: header geometry, grey-level conventions, codecs.

Each object is a valid Digital Mammography X-Ray Image Storage - For Presentation instance
(Secondary Capture for digitised film) that passes ``dciodvfy``. Geometry follows ``dicom.md``:
GE reports Imager Pixel Spacing 0.0941 mm already at the breast support (ERMF 1) and a SIGMOID VOI
with a VOI LUT Sequence; Hologic reports the 0.07 mm detector pitch with ERMF 1.07; Siemens
0.085 mm with ERMF 1.08; Fuji 0.05 mm with a calibrated Pixel Spacing; film is a Secondary
Capture with no spacing (the caller gives it). Test and demo data only: nothing on the serving
path imports this room.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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

from aln.synthetic import TRANSFER_SYNTAXES, Vendor

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


def _sigmoid_lut(center: float, width: float, bits_in: int) -> list[int]:
    values = np.arange(1 << bits_in, dtype=np.float64)
    table = 65535.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    return [int(v) for v in np.rint(table)]


def new_uid(rng: np.random.Generator) -> UID:
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
    sop_uid = new_uid(rng)
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
    ds.StudyInstanceUID = new_uid(rng)
    ds.SeriesInstanceUID = new_uid(rng)
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
