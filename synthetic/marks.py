"""A radiologist's lesion marks as a viewer saves them: a TID 1500 SR, for demos and tests.

Writes what OHIF and other viewers write when a radiologist marks a lesion: a Comprehensive 3D SR
holding a Measurement Report with one planar ROI group per mark (tracking identifier, finding,
image-region SCOORD on the marked image). Needs the ``pacs`` extra (highdicom).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from aln.pacs.codes import PROCEDURE


@dataclass(frozen=True)
class DrawnMark:
    """One mark to draw.

    Attributes:
        image: The image it is drawn on.
        graphic_type: ``POINT``, ``CIRCLE``, ``ELLIPSE``, ``POLYLINE`` or ``POLYGON``.
        points: The SCOORD's ``(x, y)`` points in stored pixels.
        identifier: The tracking identifier ("primary lesion", "auxiliary region", ...).
        finding: The finding code.
    """

    image: Dataset
    graphic_type: str
    points: Sequence[Sequence[float]]
    identifier: str
    finding: Code = codes.SCT.Lesion


def marks_report(images: Sequence[Dataset], marks: Sequence[DrawnMark]) -> Dataset:
    """A reading radiologist's measurement report holding ``marks``, in the images' study."""
    import highdicom as hd

    groups = [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=generate_uid(), identifier=mark.identifier
            ),
            referenced_region=hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues[mark.graphic_type],
                graphic_data=np.asarray(mark.points, dtype=np.float32),
                source_image=hd.sr.SourceImageForRegion(
                    mark.image.SOPClassUID, mark.image.SOPInstanceUID
                ),
            ),
            finding_type=mark.finding,
        )
        for mark in marks
    ]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name="Radiologist^Reading"
        ),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    report: Dataset = hd.sr.Comprehensive3DSR(
        evidence=list(images),
        content=content,
        series_instance_uid=generate_uid(),
        series_number=300,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="synthetic viewer",
    )
    return report
