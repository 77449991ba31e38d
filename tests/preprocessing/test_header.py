import pytest

from aln.preprocessing.errors import InvalidDicomError, ResourceLimitError, UnsupportedImageError
from aln.preprocessing.header import Limits, read_header
from tests.corpus import edit


def test_valid_mg_for_presentation_is_accepted(hologic_case):
    header = read_header(hologic_case.dicom)
    assert header.sop_class_uid == "1.2.840.10008.5.1.4.1.1.1.2"
    assert (header.rows, header.columns, header.bits_stored) == (900, 760, 12)


def test_not_dicom():
    with pytest.raises(InvalidDicomError, match="not a DICOM Part 10 file: no 'DICM' prefix"):
        read_header(b"%PDF-1.7 " * 40)


def test_truncated_file(hologic_case):
    with pytest.raises(InvalidDicomError, match=r"\(7FE0,0010\) 'Pixel Data'"):
        from aln.preprocessing import Region, preprocess_image

        preprocess_image(hologic_case.dicom[: len(hologic_case.dicom) // 2], Region(300, 400))


def test_truncated_header():
    data = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40"
    with pytest.raises(InvalidDicomError):
        read_header(data)


def test_no_pixel_data(hologic_case):
    with pytest.raises(InvalidDicomError, match=r"\(7FE0,0010\) 'Pixel Data' element is missing"):
        read_header(edit(hologic_case.dicom, PixelData=None))


def test_unsupported_sop_class(hologic_case):
    ct = "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(
        UnsupportedImageError,
        match=rf"\(0008,0016\) 'SOP Class UID' value of '{ct}' is not supported",
    ):
        read_header(edit(hologic_case.dicom, SOPClassUID=ct))


def test_for_processing_refused(hologic_case):
    with pytest.raises(UnsupportedImageError, match="FOR PROCESSING"):
        read_header(edit(hologic_case.dicom, PresentationIntentType="FOR PROCESSING"))
    with pytest.raises(UnsupportedImageError, match="FOR PROCESSING"):
        read_header(edit(hologic_case.dicom, SOPClassUID="1.2.840.10008.5.1.4.1.1.1.2.1"))


def test_tomosynthesis_refused(hologic_case):
    with pytest.raises(UnsupportedImageError, match="Breast Tomosynthesis"):
        read_header(edit(hologic_case.dicom, SOPClassUID="1.2.840.10008.5.1.4.1.1.13.1.3"))


def test_colour_refused(hologic_case):
    with pytest.raises(UnsupportedImageError, match="'RGB'.*MONOCHROME1 or MONOCHROME2"):
        read_header(edit(hologic_case.dicom, PhotometricInterpretation="RGB"))


def test_bits_stored_out_of_range(hologic_case):
    with pytest.raises(
        InvalidDicomError,
        match=r"'Bits Stored' value of '17' is invalid, it must be in the range \(1, 16\)",
    ):
        read_header(edit(hologic_case.dicom, BitsStored=17))


def test_rows_columns_beyond_limit(hologic_case):
    with pytest.raises(ResourceLimitError, match="900 x 760 x 1.*above the limit of 1000"):
        read_header(hologic_case.dicom, Limits(max_pixels=1000))


def test_compressed_size_beyond_limit(hologic_case):
    with pytest.raises(ResourceLimitError, match="above the limit of 100 bytes"):
        read_header(hologic_case.dicom, Limits(max_bytes=100))


def test_multiframe_refused(hologic_case):
    with pytest.raises(UnsupportedImageError, match="'Number of Frames' value of '2'"):
        read_header(edit(hologic_case.dicom, NumberOfFrames=2))


def test_dx_accepted_only_for_breast(hologic_case):
    dx = "1.2.840.10008.5.1.4.1.1.1"
    assert read_header(edit(hologic_case.dicom, SOPClassUID=dx)).sop_class_uid == dx
    with pytest.raises(UnsupportedImageError, match="'CHEST'"):
        read_header(edit(hologic_case.dicom, SOPClassUID=dx, BodyPartExamined="CHEST"))


def test_secondary_capture_needs_caller_spacing(make_case):
    film = make_case("film", "explicit")
    with pytest.raises(UnsupportedImageError, match="Secondary Capture.*spacing_mm"):
        read_header(film.dicom)
    assert read_header(film.dicom, allow_secondary_capture=True).secondary_capture
