"""Where the gateway finds a study's clinical record: a small pluggable interface.

A hospital looks the record up in its EHR (a FHIR server, an HL7 feed); this project ships the
stand-in :class:`FolderRecords`, a folder of JSON files named by Study Instance UID or by
Accession Number, so the gateway runs end to end without an EHR. Every record is validated by
the served model's clinical schema before a request is sent, with the field named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from aln.pacs.errors import RecordNotFoundError
from aln.preprocessing.clinical import ClinicalSchema


class ClinicalRecords(Protocol):
    """Looks up the clinical record of a study."""

    def lookup(self, study_uid: str, accession_number: str | None) -> dict[str, Any]:
        """The record (named fields) of the study.

        Raises:
            RecordNotFoundError: No record for the study.
        """
        ...


class FolderRecords:
    """Records as ``<StudyInstanceUID>.json`` or ``<AccessionNumber>.json`` in a folder.

    Args:
        folder: The folder.
        schema: The clinical schema records are checked against (default v1).
    """

    def __init__(self, folder: Path, schema: ClinicalSchema | None = None) -> None:
        self.folder = Path(folder)
        self.schema = schema or ClinicalSchema.load()

    def lookup(self, study_uid: str, accession_number: str | None) -> dict[str, Any]:
        """The validated record of the study (by UID first, then by accession number).

        Raises:
            RecordNotFoundError: Neither file exists.
            ClinicalRecordError: The record breaks the schema (the field is named).
        """
        # the accession number is a patient identifier: no message names it
        names = [study_uid] + ([accession_number] if accession_number else [])
        for name in names:
            path = self.folder / f"{name}.json"
            if path.is_file():
                try:
                    record: dict[str, Any] = json.loads(path.read_text())
                except json.JSONDecodeError as exc:
                    which = f"{study_uid}.json" if name == study_uid else "<accession>.json"
                    raise RecordNotFoundError(
                        f"The clinical record of study {study_uid} ({which} in {self.folder}) is "
                        f"not valid JSON: {exc}"
                    ) from exc
                self.schema.validate(record)
                return record
        also = ", nor one under the study's accession number," if accession_number else ""
        raise RecordNotFoundError(
            f"No clinical record for study {study_uid}: no {study_uid}.json{also} in {self.folder}"
        )
