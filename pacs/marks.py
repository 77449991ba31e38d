"""Lesion marks from the radiologist's structured report: TID 1500 SR in, regions out.

Viewers (OHIF and others) save a radiologist's marks as a TID 1500 Measurement Report: one
measurement group per finding, each with a tracking identifier, often a finding code, and an
image-region SCOORD naming the SOP Instance it was drawn on. This module reads those groups and
turns each SCOORD into the region the ensemble takes:

* ``POINT``: the lesion centre, no box;
* ``CIRCLE`` (centre, a point on the circle): the centre and the circle's bounding box;
* ``ELLIPSE`` (the two ends of the major axis, then of the minor axis): the centre and the
  ellipse's exact axis-aligned bounding box;
* ``POLYLINE``, ``POLYGON``, ``MULTIPOINT``: the centre and the bounding box of the vertices.

**Which mark is which** (:class:`MarkRule`, configurable): a group whose tracking identifier
contains one of ``auxiliary_words`` is the auxiliary region; otherwise a group whose tracking
identifier contains one of ``primary_words``, or whose finding is one of ``primary_findings``, is
the primary lesion. A study needs exactly one primary mark and at most one auxiliary mark.

A mark is refused, with the reason, when the instance it names is not an image of the study,
when that image is For Processing or tomosynthesis (the model takes For Presentation 2D
mammograms), or when it lies outside the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from aln.pacs.errors import MarkError

REFUSED_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2.1": "a For Processing mammogram (raw detector data)",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "a breast tomosynthesis volume",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "a breast projection X-ray (For Presentation, DBT)",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "a breast projection X-ray (For Processing, DBT)",
}
"""Image types a mark may not be drawn on, and how the refusal names them."""

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class MarkRule:
    """How measurement groups are told apart (case-insensitive substring matches).

    Attributes:
        primary_words: Tracking-identifier words of the primary lesion.
        auxiliary_words: Tracking-identifier words of the auxiliary region (checked first).
        primary_findings: Finding codes that make a group the primary lesion.
    """

    primary_words: tuple[str, ...] = ("primary", "index lesion", "target")
    auxiliary_words: tuple[str, ...] = ("auxiliary", "aux ")
    primary_findings: tuple[Code, ...] = field(
        default_factory=lambda: (codes.SCT.Mass, codes.SCT.Lesion, codes.SCT.Neoplasm)
    )


@dataclass(frozen=True)
class Mark:
    """One region drawn on one image.

    Attributes:
        sop_instance_uid: The image it was drawn on.
        centre: ``(x, y)`` in stored pixels (column, row).
        bbox: ``(x0, y0, x1, y1)`` in stored pixels, or None for a point.
        graphic_type: The SCOORD's graphic type.
        tracking_identifier: The group's tracking identifier ("" when none).
        report_uid: The SOP Instance UID of the SR it was read from ("" for a one-off mark).
    """

    sop_instance_uid: str
    centre: tuple[float, float]
    bbox: BBox | None
    graphic_type: str
    tracking_identifier: str
    report_uid: str = ""


@dataclass(frozen=True)
class StudyMarks:
    """The primary lesion's mark and, when the report has one, the auxiliary region's."""

    primary: Mark
    auxiliary: Mark | None = None


def read_marks(
    reports: list[Dataset], images: Mapping[str, Dataset], rule: MarkRule | None = None
) -> StudyMarks:
    """The primary (and auxiliary) marks of a study's measurement reports.

    Args:
        reports: The study's TID 1500 SR objects.
        images: The study's images by SOP Instance UID (headers suffice).
        rule: How groups are told apart (default :class:`MarkRule`).

    Raises:
        MarkError: No primary mark, several of a kind, or a mark that cannot be used.
    """
    rule = rule or MarkRule()
    primary: list[Mark] = []
    auxiliary: list[Mark] = []
    for report in reports:
        for group in _groups(report):
            mark = _mark(group, report)
            if mark is None:
                continue
            role = _role(group, mark, rule)
            if role is None:
                continue
            check_mark(mark, images)
            (primary if role == "primary" else auxiliary).append(mark)
    if not primary:
        raise MarkError(
            "The study's measurement reports have no primary lesion mark (a group whose "
            f"tracking identifier contains {' or '.join(map(repr, rule.primary_words))}, or "
            "whose finding is a mass, lesion or neoplasm); pass --lesion X Y --instance UID"
        )
    for kind, found in (("primary lesion", primary), ("auxiliary region", auxiliary)):
        if len(found) > 1:
            names = ", ".join(repr(m.tracking_identifier) for m in found)
            raise MarkError(f"The study has {len(found)} {kind} marks ({names}); keep one")
    return StudyMarks(primary[0], auxiliary[0] if auxiliary else None)


def _groups(report: Dataset) -> Iterator[Dataset]:
    """The measurement groups of a TID 1500 report (any CONTAINER holding an image SCOORD)."""
    for item in _walk(report):
        if item.get("ValueType") == "CONTAINER" and any(
            child.get("ValueType") == "SCOORD" for child in item.get("ContentSequence", [])
        ):
            yield item


def _walk(item: Dataset) -> Iterator[Dataset]:
    for child in item.get("ContentSequence", []):
        yield child
        yield from _walk(child)


def _text(group: Dataset, concept: Code) -> str:
    for child in group.get("ContentSequence", []):
        name = child.get("ConceptNameCodeSequence")
        if name and name[0].CodeValue == concept.value and child.get("ValueType") == "TEXT":
            return str(child.TextValue)
    return ""


def _findings(group: Dataset) -> list[tuple[str, str]]:
    out = []
    for child in group.get("ContentSequence", []):
        name = child.get("ConceptNameCodeSequence")
        if name and name[0].CodeValue == codes.DCM.Finding.value and "ConceptCodeSequence" in child:
            code = child.ConceptCodeSequence[0]
            out.append((str(code.CodeValue), str(code.CodingSchemeDesignator)))
    return out


def _role(group: Dataset, mark: Mark, rule: MarkRule) -> str | None:
    identifier = mark.tracking_identifier.lower()
    if any(word in identifier for word in rule.auxiliary_words):
        return "auxiliary"
    if any(word in identifier for word in rule.primary_words):
        return "primary"
    wanted = {(c.value, c.scheme_designator) for c in rule.primary_findings}
    if any(finding in wanted for finding in _findings(group)):
        return "primary"
    return None


def _mark(group: Dataset, report: Dataset) -> Mark | None:
    for child in group.get("ContentSequence", []):
        if child.get("ValueType") != "SCOORD":
            continue
        sources = [
            ref
            for item in child.get("ContentSequence", [])
            for ref in item.get("ReferencedSOPSequence", [])
        ]
        identifier = _text(group, codes.DCM.TrackingIdentifier)
        if not sources:
            raise MarkError(
                f"The mark {identifier!r} in SR {report.get('SOPInstanceUID')} names no image "
                "(its SCOORD has no SELECTED FROM reference)"
            )
        graphic = str(child.GraphicType)
        centre, bbox = _geometry(graphic, [float(v) for v in child.GraphicData], identifier)
        return Mark(
            str(sources[0].ReferencedSOPInstanceUID),
            centre,
            bbox,
            graphic,
            identifier,
            str(report.SOPInstanceUID),
        )
    return None


def _geometry(
    graphic: str, data: list[float], identifier: str
) -> tuple[tuple[float, float], BBox | None]:
    points = list(zip(data[0::2], data[1::2], strict=True))
    needed = {"POINT": 1, "CIRCLE": 2, "ELLIPSE": 4}.get(graphic, 1)
    if len(points) < needed or not all(math.isfinite(v) for v in data):
        raise MarkError(
            f"The mark {identifier!r} is a {graphic} with {len(points)} finite points; it needs "
            f"{needed}"
        )
    if graphic == "POINT":
        return points[0], None
    if graphic == "CIRCLE":
        (cx, cy), (ex, ey) = points[:2]
        r = math.hypot(ex - cx, ey - cy)
        return (cx, cy), (cx - r, cy - r, cx + r, cy + r)
    if graphic == "ELLIPSE":
        (ax0, ay0), (ax1, ay1), (bx0, by0), (bx1, by1) = points[:4]
        cx, cy = (ax0 + ax1) / 2, (ay0 + ay1) / 2
        a, b = ((ax1 - ax0) / 2, (ay1 - ay0) / 2), ((bx1 - bx0) / 2, (by1 - by0) / 2)
        half_x, half_y = math.hypot(a[0], b[0]), math.hypot(a[1], b[1])
        return (cx, cy), (cx - half_x, cy - half_y, cx + half_x, cy + half_y)
    if graphic in ("POLYLINE", "POLYGON", "MULTIPOINT"):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (min(xs), min(ys), max(xs), max(ys))
        return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), box
    raise MarkError(f"The mark {identifier!r} has graphic type {graphic}, which is not supported")


def check_mark(mark: Mark, images: Mapping[str, Dataset]) -> None:
    """Refuse a mark off the study's images, on a non-2D image, or reaching outside its image.

    Raises:
        MarkError: Naming the mark and the reason.
    """
    image = images.get(mark.sop_instance_uid)
    name = mark.tracking_identifier or mark.graphic_type
    if image is None:
        raise MarkError(
            f"The mark {name!r} is drawn on instance {mark.sop_instance_uid}, which is not an "
            "image of this study"
        )
    refused = REFUSED_CLASSES.get(str(image.SOPClassUID))
    if refused is not None:
        raise MarkError(
            f"The mark {name!r} is drawn on {refused} ({mark.sop_instance_uid}); the model takes "
            "For Presentation 2D mammograms"
        )
    columns, rows = int(image.Columns), int(image.Rows)
    corners = [mark.centre] if mark.bbox is None else [mark.bbox[:2], mark.bbox[2:]]
    x, y = mark.centre
    if not (0 <= x < columns and 0 <= y < rows) or any(
        not (-0.5 <= cx <= columns and -0.5 <= cy <= rows) for cx, cy in corners
    ):
        raise MarkError(
            f"The mark {name!r} at ({x:.1f}, {y:.1f}) reaches outside the image "
            f"({columns} x {rows} stored pixels, x = column, y = row)"
        )
