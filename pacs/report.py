"""A prediction as a DICOM Structured Report that a PACS files beside the study.

A Comprehensive 3D SR holding a TID 1500 Measurement Report: one image-region measurement group
per image used (the primary lesion's crop and, when sent, the auxiliary region's), each with the
crop box as a closed POLYLINE SCOORD on its source image; the primary group carries the
probability (a measurement in the private scheme of :mod:`aln.pacs.codes`, unit UCUM ``1``) and,
when the model has an operating point, the decision as a qualitative evaluation. The algorithm is
identified by name, version and the weights' SHA-256. Patient and study modules are copied from
the source images (highdicom does it), the SR is a new series, and its Series and SOP Instance UIDs
are derived from the model version, the source instances and the crop boxes, so writing the same
study twice for the same model gives the same object (a PACS keeps one), while a corrected mark
(another crop) gives a new SR beside the old one. The radiologist's measurement reports the marks
came from are listed as evidence with the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from aln.client.types import Prediction
from aln.pacs import codes as aln_codes
from aln.pacs.errors import ReportError
from aln.preprocessing.decision import Decision

MANUFACTURER = "aln-triton"
SERIES_DESCRIPTION = "aln-triton axillary lymph node prediction (research use)"
SERIES_NUMBER = 9901


def report_uids(sources: Sequence[Dataset], prediction: Prediction) -> tuple[str, str]:
    """``(series UID, SOP instance UID)`` of the SR: the same inputs give the same UIDs.

    The key is the model (name, version, weights), the source instances and the crop boxes the
    server reported, so a moved mark is a new result, the same mark the same one.
    """
    key = [prediction.model_name, prediction.model_version, _weights(prediction)]
    key += sorted(str(ds.SOPInstanceUID) for ds in sources)
    for image in ("primary", "auxiliary"):
        if prediction.provenance.get(image):
            key.append(f"{image}:{_box(prediction, image)}")
    return generate_uid(entropy_srcs=["series", *key]), generate_uid(entropy_srcs=["sr", *key])


def build_report(
    primary: Dataset,
    prediction: Prediction,
    auxiliary: Dataset | None = None,
    marks: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """The SR of one prediction.

    Args:
        primary: The primary image (header only is enough: its identifiers and modules).
        prediction: The served answer (its provenance names the crop boxes and the model).
        auxiliary: The auxiliary region's image when it is another object.
        marks: The measurement reports the lesion marks were read from (listed as evidence).

    Raises:
        ReportError: The images are not of one study, or the provenance lacks a crop box.
    """
    sources = [primary] if auxiliary is None or _same(primary, auxiliary) else [primary, auxiliary]
    if len({str(ds.StudyInstanceUID) for ds in sources}) != 1:
        raise ReportError(
            "The primary and auxiliary images belong to different studies "
            f"({primary.StudyInstanceUID} and {sources[-1].StudyInstanceUID}); one SR reports "
            "one study"
        )
    algorithm = hd.sr.AlgorithmIdentification(
        name=prediction.model_name or MANUFACTURER,
        version=prediction.model_version or "unknown",
        parameters=[f"weights_sha256={_weights(prediction)}"],
        family=codes.DCM.ArtificialIntelligence,
        manufacturer=MANUFACTURER,
    )
    groups = [
        _group(
            "primary lesion crop",
            primary,
            _box(prediction, "primary"),
            [_probability(prediction, algorithm)],
            _decision(prediction),
        )
    ]
    if prediction.provenance.get("auxiliary"):
        image = sources[-1]
        groups.append(_group("auxiliary region crop", image, _box(prediction, "auxiliary"), [], []))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[MANUFACTURER, prediction.model_name]),
            name=MANUFACTURER,
            model_name=f"{prediction.model_name} {prediction.model_version}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=aln_codes.PROCEDURE,
        imaging_measurements=groups,
    )
    series_uid, sop_uid = report_uids(sources, prediction)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, *marks],
        content=report,
        series_number=SERIES_NUMBER,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # an algorithm's result, never verified by a person
    )
    sr.SeriesDescription = SERIES_DESCRIPTION
    scheme = Dataset()
    scheme.CodingSchemeDesignator = aln_codes.SCHEME
    scheme.CodingSchemeName = aln_codes.SCHEME_NAME
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def is_result(report: Dataset) -> bool:
    """Whether an SR is one of this project's results (never read as a radiologist's marks)."""
    schemes = report.get("CodingSchemeIdentificationSequence", [])
    return report.get("Manufacturer") == MANUFACTURER and any(
        item.get("CodingSchemeDesignator") == aln_codes.SCHEME for item in schemes
    )


def read_probability(report: Dataset) -> float:
    """The probability an SR written by :func:`build_report` holds.

    Raises:
        ReportError: The SR holds no such measurement.
    """
    for item in _walk(report):
        name = item.get("ConceptNameCodeSequence")
        if (
            item.get("ValueType") == "NUM"
            and name
            and name[0].CodeValue == aln_codes.PROBABILITY.value
            and name[0].CodingSchemeDesignator == aln_codes.SCHEME
        ):
            value = item.MeasuredValueSequence[0]
            if "FloatingPointValue" in value:
                return float(value.FloatingPointValue)
            return float(value.NumericValue)
    raise ReportError(f"The SR {report.get('SOPInstanceUID')} holds no {aln_codes.PROBABILITY}")


def _walk(item: Dataset) -> Any:
    for child in item.get("ContentSequence", []):
        yield child
        yield from _walk(child)


def _same(a: Dataset, b: Dataset) -> bool:
    return str(a.SOPInstanceUID) == str(b.SOPInstanceUID)


def _weights(prediction: Prediction) -> str:
    return str((prediction.provenance.get("model") or {}).get("weights_sha256", ""))


def _box(prediction: Prediction, image: str) -> tuple[float, float, float, float]:
    entry = prediction.provenance.get(image) or {}
    box = entry.get("crop_box")
    if not box or len(box) != 4:
        raise ReportError(f"The prediction's provenance has no {image} crop box")
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1


def _group(
    name: str,
    image: Dataset,
    box: tuple[float, float, float, float],
    measurements: list[hd.sr.Measurement],
    evaluations: list[hd.sr.QualitativeEvaluation],
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=corners,
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=image.SOPClassUID,
            referenced_sop_instance_uid=image.SOPInstanceUID,
        ),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[name, str(image.SOPInstanceUID)]), identifier=name
        ),
        referenced_region=region,
        finding_type=aln_codes.FINDING,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )


def _probability(
    prediction: Prediction, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=aln_codes.PROBABILITY,
        value=float(prediction.probability),
        unit=aln_codes.NO_UNITS,
        algorithm_id=algorithm,
    )


def _decision(prediction: Prediction) -> list[hd.sr.QualitativeEvaluation]:
    if prediction.decision is Decision.UNAVAILABLE:
        return []
    value = (
        aln_codes.LIKELY_POSITIVE
        if prediction.decision is Decision.LIKELY_POSITIVE
        else aln_codes.LOW_RISK
    )
    return [hd.sr.QualitativeEvaluation(name=aln_codes.DECISION, value=value)]
