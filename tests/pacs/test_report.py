"""The result SR: valid DICOM (dciodvfy), read back by highdicom, the same probability."""

from __future__ import annotations

import copy
import io
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from aln.client.types import Prediction
from aln.pacs import codes
from aln.pacs.report import ReportError, build_report, read_probability, report_uids
from aln.preprocessing.decision import Decision
from aln.synthetic.mammogram import synth_case
from tests.pacs.test_marks import G, group, report


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    cc = synth_case(rng, "hologic", "explicit", shape=(600, 500), laterality="L", view="CC")
    mlo = synth_case(rng, "hologic", "explicit", shape=(600, 500), laterality="L", view="MLO")
    primary = pydicom.dcmread(io.BytesIO(cc.dicom))
    auxiliary = pydicom.dcmread(io.BytesIO(mlo.dicom))
    auxiliary.StudyInstanceUID = primary.StudyInstanceUID  # two views of one study
    for key in ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "StudyID"):
        setattr(auxiliary, key, getattr(primary, key))
    return primary, auxiliary


def prediction(decision=Decision.LOW_RISK, auxiliary=False, probability=0.123456789):
    return Prediction(
        probability=probability,
        logit=-1.96,
        decision=decision,
        model_name="aln_swinv2_tiny_window8_256",
        model_version="trained-20261202T000000",
        provenance={
            "model": {"weights_sha256": "ab" * 32},
            "primary": {"crop_box": [100, 120, 356, 376]},
            "auxiliary": {"crop_box": [50, 60, 306, 316]} if auxiliary else None,
        },
    )


def evidence(sr):
    """The SOP Instance UIDs an SR lists as its evidence."""
    return {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }


def dciodvfy_errors(dataset, tmp_path):
    path = tmp_path / "sr.dcm"
    dataset.save_as(path, enforce_file_format=True)
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy comes with make install")
def test_the_sr_is_valid_dicom_and_reads_back_with_the_same_probability(images, tmp_path):
    primary, auxiliary = images
    answer = prediction(Decision.LIKELY_POSITIVE, auxiliary=True)
    sr = build_report(primary, answer, auxiliary)
    assert dciodvfy_errors(sr, tmp_path) == []
    again = pydicom.dcmread(tmp_path / "sr.dcm")
    assert abs(read_probability(again) - answer.probability) <= 1e-6
    parsed = hd.sr.Comprehensive3DSR.from_dataset(again)
    groups = parsed.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [
        "primary lesion crop",
        "auxiliary region crop",
    ]
    region = groups[0].roi
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert region.value.tolist()[0] == [100.0, 120.0]
    source = region.ContentSequence[0].ReferencedSOPSequence[0]  # SELECTED FROM
    assert source.ReferencedSOPInstanceUID == primary.SOPInstanceUID
    assert groups[1].roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        auxiliary.SOPInstanceUID
    )
    evaluation = groups[0].get_qualitative_evaluations()[0]
    assert evaluation.value == codes.LIKELY_POSITIVE
    # filed with the study: its patient and study, a new series, every image referenced
    for key in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber"):
        assert again[key].value == primary[key].value
    assert again.SeriesInstanceUID not in (primary.SeriesInstanceUID, auxiliary.SeriesInstanceUID)
    assert evidence(again) == {primary.SOPInstanceUID, auxiliary.SOPInstanceUID}
    assert again.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == codes.SCHEME


def test_the_same_study_and_model_give_the_same_object(images):
    primary, _ = images
    first, second = build_report(primary, prediction()), build_report(primary, prediction())
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    other = prediction()
    other = Prediction(**{**other.__dict__, "model_version": "trained-20270101T000000"})
    assert report_uids([primary], other) != report_uids([primary], prediction())


def test_a_moved_mark_gives_a_new_result(images):
    """Another crop (a corrected mark) is a new result, never taken for the one already there."""
    primary, _ = images
    moved = prediction()
    moved.provenance["primary"] = {"crop_box": [110, 120, 366, 376]}
    assert report_uids([primary], moved) != report_uids([primary], prediction())


def test_the_marks_are_listed_as_evidence(images):
    primary, _ = images
    marks = report([primary], [group(primary, G.POINT, [(228.0, 248.0)], "primary lesion")])
    sr = build_report(primary, prediction(), marks=[marks])
    assert evidence(sr) == {primary.SOPInstanceUID, marks.SOPInstanceUID}


def test_no_decision_without_an_operating_point(images):
    primary, _ = images
    sr = build_report(primary, prediction(Decision.UNAVAILABLE))
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()
    assert groups[0].get_qualitative_evaluations() == []
    assert abs(read_probability(sr) - 0.123456789) <= 1e-6


def test_images_of_two_studies_are_refused(images):
    primary, auxiliary = images
    other = copy.deepcopy(auxiliary)
    other.StudyInstanceUID = pydicom.uid.generate_uid()
    with pytest.raises(ReportError, match="belong to different studies"):
        build_report(primary, prediction(auxiliary=True), other)


def test_a_provenance_without_a_crop_box_is_refused(images):
    primary, _ = images
    answer = prediction()
    answer.provenance["primary"] = {}
    with pytest.raises(ReportError, match="no primary crop box"):
        build_report(primary, answer)
