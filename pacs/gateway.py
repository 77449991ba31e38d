"""The PACS gateway: a study in the PACS in, the prediction back beside it as a DICOM SR.

For one study (:meth:`Gateway.predict_study`): the study's instances are listed over DICOMweb
(QIDO-RS), its measurement reports and the headers of its images are retrieved (WADO-RS), the
lesion marks are read from the reports (:mod:`aln.pacs.marks`) unless the caller gives one, the
clinical record is looked up (:mod:`aln.pacs.records`), the marked images go to the Triton
ensemble through the SDK like every other caller's, and the result SR (:mod:`aln.pacs.report`)
is stored with STOW-RS unless an SR with its UID is already there: the same study and model
version are never written twice.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from aln.client import AlnClient, ImageInput, Prediction
from aln.pacs.errors import GatewayError
from aln.pacs.marks import Mark, MarkRule, StudyMarks, check_mark, read_marks
from aln.pacs.records import ClinicalRecords
from aln.pacs.report import build_report, is_result

SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
}
"""SOP classes a viewer's measurement report may be stored as."""
SOP_CLASS, SOP_INSTANCE, SERIES = "00080016", "00080018", "0020000E"


@dataclass(frozen=True)
class GatewayResult:
    """What the gateway did with one study.

    Attributes:
        study_uid: The study.
        prediction: The served answer.
        sr_sop_instance_uid: The result SR's SOP Instance UID.
        written: False when an SR with that UID was already in the PACS (nothing stored).
    """

    study_uid: str
    prediction: Prediction
    sr_sop_instance_uid: str
    written: bool


class Gateway:
    """Predicts studies that live in a PACS reached over DICOMweb.

    Args:
        dicomweb: A ``dicomweb_client.DICOMwebClient`` of the PACS.
        client: The SDK client of the Triton ensemble.
        records: Where clinical records come from.
        rule: How marks are told apart (default :class:`aln.pacs.marks.MarkRule`).
    """

    def __init__(
        self,
        dicomweb: Any,
        client: AlnClient,
        records: ClinicalRecords,
        rule: MarkRule | None = None,
    ) -> None:
        self.dicomweb = dicomweb
        self.client = client
        self.records = records
        self.rule = rule

    def predict_study(self, study_uid: str, lesion: Mark | None = None) -> GatewayResult:
        """Predict one study and store the result SR beside it.

        Args:
            study_uid: The Study Instance UID.
            lesion: A one-off primary mark (``--lesion X Y --instance UID``) for a study without
                a measurement report; its instance must still be an image of the study.

        Raises:
            GatewayError: The study is not in the PACS.
            MarkError: No usable marks (the reason named).
            RecordNotFoundError, ClinicalRecordError: No or a bad clinical record.
            AlnClientError: The server refused the study (the cause named).
        """
        found = self.dicomweb.search_for_instances(study_instance_uid=study_uid)
        if not found:
            raise GatewayError(f"The study {study_uid} has no instances in the PACS")
        series_of = {_value(i, SOP_INSTANCE): _value(i, SERIES) for i in found}
        structured = [
            self._instance(study_uid, series_of[_value(i, SOP_INSTANCE)], _value(i, SOP_INSTANCE))
            for i in found
            if _value(i, SOP_CLASS) in SR_CLASSES
        ]
        reports = [r for r in structured if not is_result(r)]  # results of earlier runs
        images = {
            uid: self._metadata(study_uid, series, uid)
            for uid, series in series_of.items()
            if uid not in {str(r.SOPInstanceUID) for r in structured}
        }
        if lesion is None:
            marks = read_marks(reports, images, self.rule)
        else:
            check_mark(lesion, images)
            marks = StudyMarks(lesion)
        uid = marks.primary.sop_instance_uid
        primary = self._instance(study_uid, series_of[uid], uid)
        auxiliary = None
        if marks.auxiliary is not None:
            uid = marks.auxiliary.sop_instance_uid
            same = uid == str(primary.SOPInstanceUID)
            auxiliary = primary if same else self._instance(study_uid, series_of[uid], uid)
        record = self.records.lookup(study_uid, str(primary.get("AccessionNumber", "")) or None)
        aux_input = None
        if auxiliary is not None and marks.auxiliary is not None:
            aux_input = _image(auxiliary, marks.auxiliary)
        prediction = self.client.predict(
            _image(primary, marks.primary), record, auxiliary=aux_input
        )
        used = {marks.primary.report_uid} | {marks.auxiliary.report_uid if marks.auxiliary else ""}
        drawn = [r for r in reports if str(r.SOPInstanceUID) in used]
        sr = build_report(primary, prediction, auxiliary, drawn)
        present = self.dicomweb.search_for_instances(
            study_instance_uid=study_uid,
            search_filters={"SOPInstanceUID": str(sr.SOPInstanceUID)},
        )
        if not present:
            self.dicomweb.store_instances([sr])
        return GatewayResult(study_uid, prediction, str(sr.SOPInstanceUID), not present)

    def _instance(self, study: str, series: str, sop: str) -> Dataset:
        dataset: Dataset = self.dicomweb.retrieve_instance(study, series, sop)
        return dataset

    def _metadata(self, study: str, series: str, sop: str) -> Dataset:
        return Dataset.from_json(self.dicomweb.retrieve_instance_metadata(study, series, sop))


def _value(item: dict[str, Any], tag: str) -> str:
    return str(item.get(tag, {}).get("Value", [""])[0])


def encoded(dataset: Dataset) -> bytes:
    """A retrieved instance as Part 10 bytes (what the ensemble takes)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _image(dataset: Dataset, mark: Mark) -> ImageInput:
    return ImageInput(encoded(dataset), mark.centre, mark.bbox)
