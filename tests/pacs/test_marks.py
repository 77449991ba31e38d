"""Lesion marks read from TID 1500 measurement reports, as a viewer saves them."""

from __future__ import annotations

import copy
import io
import math

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from aln.pacs.marks import MarkError, MarkRule, read_marks
from aln.synthetic.mammogram import synth_case
from aln.synthetic.marks import DrawnMark, marks_report


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(4)
    cc = pydicom.dcmread(io.BytesIO(synth_case(rng, "ge", "explicit", shape=(600, 500)).dicom))
    mlo = pydicom.dcmread(io.BytesIO(synth_case(rng, "ge", "explicit", shape=(600, 500)).dicom))
    mlo.StudyInstanceUID = cc.StudyInstanceUID
    for key in ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "StudyID"):
        setattr(mlo, key, getattr(cc, key))
    return {str(cc.SOPInstanceUID): cc, str(mlo.SOPInstanceUID): mlo}


def group(image, graphic, points, identifier, finding=codes.SCT.Lesion):
    return DrawnMark(image, graphic.value, points, identifier, finding)


def report(images, marks):
    return marks_report(images, marks)


G = hd.sr.GraphicTypeValues
SKIN_MARKER = Code("SKIN", "99TEST", "Skin marker")


def test_each_graphic_type_gives_a_centre_and_a_box(study):
    cc = next(iter(study.values()))
    cases = [
        (G.POINT, [[200, 300]], (200, 300), None),
        (G.CIRCLE, [[200, 300], [230, 300]], (200, 300), (170, 270, 230, 330)),
        (
            G.POLYLINE,
            [[150, 280], [250, 280], [250, 330], [150, 330], [150, 280]],
            (200, 305),
            (150, 280, 250, 330),
        ),
    ]
    for graphic, points, centre, bbox in cases:
        marks = read_marks([report([cc], [group(cc, graphic, points, "primary lesion")])], study)
        assert marks.primary.centre == pytest.approx(centre) and marks.auxiliary is None
        assert marks.primary.bbox == (None if bbox is None else pytest.approx(bbox))
        assert marks.primary.sop_instance_uid == cc.SOPInstanceUID


def test_a_rotated_ellipse_has_its_exact_bounding_box(study):
    cc = next(iter(study.values()))
    a, b, angle = 40.0, 20.0, math.radians(30)
    ax, ay = a * math.cos(angle), a * math.sin(angle)
    bx, by = -b * math.sin(angle), b * math.cos(angle)
    points = [
        [200 - ax, 300 - ay],
        [200 + ax, 300 + ay],
        [200 - bx, 300 - by],
        [200 + bx, 300 + by],
    ]
    marks = read_marks([report([cc], [group(cc, G.ELLIPSE, points, "index lesion")])], study)
    half_x, half_y = math.hypot(ax, bx), math.hypot(ay, by)
    assert marks.primary.bbox == pytest.approx(
        (200 - half_x, 300 - half_y, 200 + half_x, 300 + half_y), abs=1e-3
    )


def test_primary_and_auxiliary_by_tracking_identifier_or_finding(study):
    cc, mlo = study.values()
    groups = [
        group(cc, G.POINT, [[200, 300]], "Finding 1", finding=codes.SCT.Mass),
        group(mlo, G.POINT, [[100, 120]], "auxiliary region"),
        group(cc, G.POINT, [[10, 10]], "skin marker", finding=SKIN_MARKER),
    ]
    marks = read_marks([report([cc, mlo], groups)], study)
    assert marks.primary.centre == (200, 300) and marks.auxiliary.centre == (100, 120)
    assert marks.auxiliary.sop_instance_uid == mlo.SOPInstanceUID
    # a rule of the site's own words
    rule = MarkRule(primary_words=("finding 1",), auxiliary_words=("skin",), primary_findings=())
    marks = read_marks([report([cc, mlo], groups)], study, rule)
    assert marks.auxiliary.tracking_identifier == "skin marker"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", "is not an image of this study"),
        ("processing", "drawn on a For Processing mammogram"),
        ("tomosynthesis", "drawn on a breast tomosynthesis volume"),
        ("outside", r"reaches outside the image \(500 x 600 stored pixels"),
        ("none", "no primary lesion mark"),
        ("two", "2 primary lesion marks"),
    ],
)
def test_marks_that_cannot_be_used_are_refused_with_the_reason(study, change, message):
    cc, mlo = study.values()
    images = dict(study)
    points = [[200, 300]]
    groups = [group(cc, G.POINT, points, "primary lesion")]
    if change == "missing":
        images.pop(str(cc.SOPInstanceUID))
    elif change in ("processing", "tomosynthesis"):
        other = copy.deepcopy(cc)
        other.SOPClassUID = (
            "1.2.840.10008.5.1.4.1.1.1.2.1"
            if change == "processing"
            else "1.2.840.10008.5.1.4.1.1.13.1.3"
        )
        images[str(cc.SOPInstanceUID)] = other
    elif change == "outside":
        groups = [group(cc, G.CIRCLE, [[480, 300], [530, 300]], "primary lesion")]
    elif change == "none":
        groups = [group(cc, G.POINT, points, "skin marker", finding=SKIN_MARKER)]
    elif change == "two":
        groups.append(group(mlo, G.POINT, [[50, 60]], "primary lesion 2"))
    with pytest.raises(MarkError, match=message):
        read_marks([report([cc, mlo], groups)], images)
