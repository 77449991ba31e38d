"""End-to-end preprocessing on synthetic DICOMs: region decode, orientation, vendor geometry."""

import io
import json
import os
import pathlib

import numpy as np
import pydicom
import pytest

from aln.preprocessing import (
    ClinicalSchema,
    CropSpec,
    ImageOptions,
    OrientationError,
    Region,
    SpacingError,
    StudyInput,
    preprocess_image,
    preprocess_study,
)
from aln.preprocessing.errors import InvalidDicomError
from tests.corpus import edit

REGION_SYNTAXES = ("explicit", "implicit", "jpeg2000", "jpeg2000-lossy")
"""The syntaxes whose region path is its own code (slicing, OpenJPEG's decode area)."""


def test_region_paths_are_the_syntaxes_tested_here():
    from aln.preprocessing.decode import REGION_PATHS, transfer_syntax_name

    assert {transfer_syntax_name(uid) for uid in REGION_PATHS} == set(REGION_SYNTAXES)


@pytest.mark.parametrize("transfer_syntax", REGION_SYNTAXES)
def test_region_decode_equals_crop_of_full_decode(make_case, transfer_syntax, monkeypatch):
    import aln.preprocessing.decode as decode

    case = make_case("hologic", transfer_syntax, seed=2)
    region = Region(*case.lesion_centre)
    full_decodes = []
    real = decode._pydicom_full
    monkeypatch.setattr(decode, "_pydicom_full", lambda h: full_decodes.append(1) or real(h))
    fast = preprocess_image(case.dicom, region)
    assert not full_decodes  # the region path never decodes the whole image
    full = preprocess_image(case.dicom, region, strategy="full")
    assert full_decodes
    np.testing.assert_array_equal(fast.grey, full.grey)
    assert fast.provenance == full.provenance
    assert fast.provenance.transfer_syntax == transfer_syntax


def test_openjpeg_decode_area_is_still_wrong_for_htj2k(make_case):
    """HTJ2K stays on the full path because OpenJPEG's decode area returns wrong values for HT
    code-blocks. This test pins that defect: when it fails, OpenJPEG has fixed it, and HTJ2K can
    join the region path (``_REGION_CAPABLE`` in ``aln.preprocessing.decode``)."""
    from aln.preprocessing.decode import Window, _openjpeg_region, _pydicom_full
    from aln.preprocessing.header import read_header

    case = make_case("hologic", "htj2k", seed=2)
    header = read_header(case.dicom)
    x, y = (int(v) for v in case.lesion_centre)
    window = Window(max(y - 150, 0), y + 150, max(x - 150, 0), x + 150)
    full = _pydicom_full(header)[window.row0 : window.row1, window.col0 : window.col1]
    area = _openjpeg_region(header, window)
    assert area.shape == full.shape
    assert not np.array_equal(area, full), "OpenJPEG now decodes HTJ2K areas exactly"


def test_lossless_syntaxes_decode_identically(make_case):
    reference = preprocess_image(make_case("ge", "explicit", seed=3).dicom, Region(300, 400))
    for syntax in ("implicit", "jpeg2000", "htj2k", "jpegls", "rle"):
        other = preprocess_image(make_case("ge", syntax, seed=3).dicom, Region(300, 400))
        np.testing.assert_array_equal(other.grey, reference.grey, err_msg=syntax)


def test_padded_crop_near_the_edge(make_case):
    case = make_case("ge", "jpeg2000", seed=4)
    fast = preprocess_image(case.dicom, Region(5, 5))
    full = preprocess_image(case.dicom, Region(5, 5), strategy="full")
    assert fast.provenance.padded
    np.testing.assert_array_equal(fast.grey, full.grey)


def test_left_and_right_breasts_normalise_to_the_same_crop(make_case):
    left = make_case("hologic", "explicit", seed=5, laterality="L", view="CC")
    right = make_case("hologic", "explicit", seed=5, laterality="R", view="CC")
    a = preprocess_image(left.dicom, Region(*left.lesion_centre))
    b = preprocess_image(right.dicom, Region(*right.lesion_centre))
    assert not a.provenance.flipped and b.provenance.flipped
    assert right.lesion_centre[0] == pytest.approx(760 - left.lesion_centre[0])
    np.testing.assert_allclose(a.grey, b.grey, atol=1e-6)


def test_monochrome1_matches_monochrome2(make_case):
    mono2 = make_case("siemens", "explicit", seed=6, monochrome1=False)
    mono1 = make_case("siemens", "explicit", seed=6, monochrome1=True)
    a = preprocess_image(mono2.dicom, Region(*mono2.lesion_centre))
    b = preprocess_image(mono1.dicom, Region(*mono1.lesion_centre))
    np.testing.assert_allclose(a.grey, b.grey, atol=2e-3)


@pytest.mark.parametrize("vendor", ["ge", "hologic", "siemens", "fuji"])
def test_crop_is_50_mm_at_the_breast_for_every_vendor(make_case, vendor):
    case = make_case(vendor, "explicit", seed=7)
    result = preprocess_image(case.dicom, Region(*case.lesion_centre))
    assert result.provenance.spacing_mm == pytest.approx(case.spacing_mm, rel=1e-5)
    assert result.provenance.crop_size_mm == pytest.approx(50.0, abs=case.spacing_mm)
    expected_source = "calibrated" if vendor == "fuji" else "imager_ermf"
    assert result.provenance.spacing_source == expected_source


def test_lesion_of_known_size_appears_at_known_scale():
    """A 20 mm lesion spans the same crop width on every vendor (5 cm crops are physical).

    The same seed draws the same breast and lesion in millimetres; subtracting the image drawn
    with a vanishing lesion isolates the lesion from the texture.
    """
    from aln.synthetic.mammogram import synth_case

    widths = {}
    for vendor in ("ge", "hologic", "fuji"):
        crops = []
        for diameter in (20.0, 0.01):
            case = synth_case(
                np.random.default_rng(8),
                vendor,
                "explicit",
                shape=(1600, 1400),
                laterality="L",
                view="CC",
                diameter_mm=diameter,
                monochrome1=False,
            )
            crops.append(preprocess_image(case.dicom, Region(*case.lesion_centre)).grey)
        lesion = (crops[0] - crops[1])[128] > 0.02
        widths[vendor] = int(lesion.sum())
    # Using Imager Pixel Spacing without ERMF on Hologic would shift its width by 7% (~11 px).
    assert max(widths.values()) - min(widths.values()) <= 6, widths
    # 20 mm of a 50 mm crop is 102 px; the drawn mass reaches 1.2 radii, spicules 1.35 more
    assert all(95 <= w <= 170 for w in widths.values()), widths


def test_secondary_capture_with_caller_spacing(make_case):
    film = make_case("film", "explicit", seed=9)
    with pytest.raises(Exception, match="Secondary Capture"):
        preprocess_image(film.dicom, Region(*film.lesion_centre))
    result = preprocess_image(
        film.dicom, Region(*film.lesion_centre), options=ImageOptions(spacing_mm=0.045)
    )
    assert result.provenance.spacing_source == "caller"


def test_missing_laterality_needs_override(hologic_case):
    data = edit(hologic_case.dicom, ImageLaterality=None)
    with pytest.raises(OrientationError, match="No laterality"):
        preprocess_image(data, Region(300, 300))
    assert (
        preprocess_image(
            data, Region(300, 300), options=ImageOptions(laterality="L")
        ).provenance.laterality
        == "L"
    )


def test_no_usable_spacing(hologic_case):
    data = edit(hologic_case.dicom, ImagerPixelSpacing=None)
    with pytest.raises(SpacingError, match="both absent"):
        preprocess_image(data, Region(300, 300))
    assert (
        preprocess_image(
            data, Region(300, 300), options=ImageOptions(spacing_mm=0.07)
        ).provenance.spacing_source
        == "caller"
    )


def test_wrong_sized_pixel_data(hologic_case):
    ds = pydicom.dcmread(io.BytesIO(hologic_case.dicom))
    ds.PixelData = ds.PixelData[:1000]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(
        InvalidDicomError, match="holds 1000 bytes but 900 x 760 pixels of 16 bits need 1368000"
    ):
        preprocess_image(out.getvalue(), Region(300, 300))


def test_corrupt_jpeg2000_stream(make_case):
    from tests.corpus import encapsulated_bad_studies, names_cause

    case = make_case("hologic", "jpeg2000", seed=2)
    for bad in encapsulated_bad_studies(case):
        for strategy in ("region", "full"):
            with pytest.raises(InvalidDicomError) as info:
                preprocess_image(bad.dicom, Region(*case.lesion_centre), strategy=strategy)
            assert names_cause(bad, str(info.value)), (bad.name, str(info.value))


def test_study_with_and_without_auxiliary(hologic_case):
    schema = ClinicalSchema.load()
    primary = StudyInput(hologic_case.dicom, Region(*hologic_case.lesion_centre))
    alone = preprocess_study(primary, json.dumps(hologic_case.clinical), schema)
    assert alone.auxiliary_present[0] == 0 and not alone.auxiliary_image.any()
    assert alone.provenance["auxiliary"] is None
    aux = StudyInput(
        hologic_case.dicom, Region(*hologic_case.auxiliary_centre, hologic_case.auxiliary_bbox)
    )
    both = preprocess_study(primary, hologic_case.clinical, schema, CropSpec(), aux)
    assert both.auxiliary_present[0] == 1 and both.auxiliary_image.shape == (3, 256, 256)
    np.testing.assert_array_equal(both.primary_image, alone.primary_image)
    provenance = json.loads(both.provenance_json())
    assert set(provenance["primary"]) >= {
        "spacing_mm",
        "spacing_source",
        "crop_box",
        "padded",
        "laterality",
        "view",
        "flipped",
        "manufacturer",
        "transfer_syntax",
    }
    assert provenance["preprocessing_version"]


def test_provenance_carries_no_patient_identifiers(hologic_case):
    schema = ClinicalSchema.load()
    study = preprocess_study(
        StudyInput(hologic_case.dicom, Region(*hologic_case.lesion_centre)),
        hologic_case.clinical,
        schema,
    )
    text = study.provenance_json().decode()
    for value in hologic_case.extra["patient"].values():
        assert value not in text


@pytest.mark.parametrize("transfer_syntax", ["explicit", "implicit"])
def test_uncompressed_pixel_data_is_a_view_into_the_input(make_case, transfer_syntax):
    from aln.preprocessing.header import read_header

    data = make_case("hologic", transfer_syntax, seed=3).dicom
    buffer = np.frombuffer(data, dtype=np.uint8)  # read-only, as a served input tensor is
    header = read_header(memoryview(buffer))
    assert header.pixel_data is not None
    assert np.shares_memory(np.frombuffer(header.pixel_data, dtype=np.uint8), buffer)
    assert len(header.pixel_data) == header.rows * header.columns * 2


def test_a_view_preprocesses_like_bytes_for_every_syntax(make_case):
    from aln.synthetic import TRANSFER_SYNTAXES

    for syntax in TRANSFER_SYNTAXES:
        case = make_case("ge", syntax, seed=4)
        region = Region(*case.lesion_centre)
        from_bytes = preprocess_image(case.dicom, region)
        from_view = preprocess_image(memoryview(np.frombuffer(case.dicom, np.uint8)), region)
        np.testing.assert_array_equal(from_view.grey, from_bytes.grey, err_msg=syntax)
        assert from_view.provenance == from_bytes.provenance


def test_preprocessing_a_view_never_copies_the_image():
    import tracemalloc

    from aln.synthetic.mammogram import synth_case

    case = synth_case(np.random.default_rng(5), "hologic", "explicit", diameter_mm=12.0)
    view = memoryview(np.frombuffer(case.dicom, dtype=np.uint8))
    region = Region(*case.lesion_centre)
    preprocess_image(view, region)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        preprocess_image(view, region)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The crop's float64 temporaries peak near 16 MB; one copy of the 4096 x 3328 image adds 27.
    assert peak < 0.8 * len(case.dicom), (
        f"peak {peak / 1e6:.1f} MB for a {len(case.dicom) / 1e6:.1f} MB input"
    )


def test_a_decode_scratch_file_left_by_a_dead_process_is_found_by_its_pid(make_case, monkeypatch):
    """OpenJPEG decodes from a scratch file; a crash inside it leaves the file, named by pid."""
    import glymur

    import aln.preprocessing.decode as decode
    from aln.preprocessing.header import read_header

    case = make_case("hologic", "jpeg2000", seed=2)
    opened = []
    real = glymur.Jp2k
    monkeypatch.setattr(glymur, "Jp2k", lambda name: opened.append(name) or real(name))
    decode._openjpeg_region(read_header(case.dicom), decode.Window(0, 64, 0, 64))
    scratch = pathlib.Path(opened[0])
    assert scratch.name.startswith(f"{decode.SCRATCH_PREFIX}{os.getpid()}-")
    assert not scratch.exists()  # removed after a decode that returned
    left = scratch.with_name(f"{decode.SCRATCH_PREFIX}999999999-left.j2k")  # a crash's leftover
    other = scratch.with_name(f"{decode.SCRATCH_PREFIX}9999999990-alive.j2k")
    left.write_bytes(b"x")
    other.write_bytes(b"x")
    try:
        assert decode.remove_scratch_of(999999999) == [left]
        assert not left.exists() and other.exists()  # another process's file is kept
    finally:
        other.unlink(missing_ok=True)
        left.unlink(missing_ok=True)
