"""``aln pacs watch``: predict every study that becomes stable in Orthanc, exactly once.

Orthanc's ``/changes`` feed numbers every change; a ``StableStudy`` change means no instance
arrived for ``StableAge`` seconds, so the study is complete. The watcher reads the feed from its
cursor, predicts each stable study with the :class:`aln.pacs.gateway.Gateway`, and moves the
cursor past a change only after that change is handled, writing it atomically (a temporary file,
``fsync``, ``os.replace``). A restart therefore never skips a study; a study whose SR was stored
just before a crash, with the cursor not yet written, is seen again and found already written
(the SR's UID is derived from the study and the model version), so nothing is stored twice.

A study the gateway refuses (no marks, no clinical record, a bad image) is recorded with the
reason in the status file (:class:`StatusFile`, ``aln pacs status``) and passed over: one bad
study must not stop the feed. A Triton server or a PACS that cannot be reached stops the pass
without moving the cursor (the study is recorded as pending), so it is tried again on the next
pass, after a bounded backoff (:class:`Backoff`). The watcher's own result SR makes the study
stable once more; that change is taken as handled without predicting again (:class:`Watcher`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from aln.client.errors import InvalidInputError, ModelUnavailableError
from aln.pacs.errors import PacsError
from aln.pacs.gateway import Gateway, GatewayResult
from aln.preprocessing.errors import PreprocessingError

log = logging.getLogger("aln.pacs.watch")

STABLE_STUDY = "StableStudy"


class Cursor:
    """The last handled change of the feed, kept in a file written atomically.

    Args:
        path: The cursor file (created on the first save).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> int:
        """The last handled change's sequence number (0: none yet)."""
        if not self.path.exists():
            return 0
        text = self.path.read_text().strip()
        if not text.isdigit():
            raise PacsError(f"The cursor file {self.path} holds {text!r}, not a change number")
        return int(text)

    def save(self, sequence: int) -> None:
        """Record ``sequence`` as handled (atomic: the old value or the new, never half)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=self.path.parent, prefix=f".{self.path.name}.", delete=False
        ) as fh:
            fh.write(f"{sequence}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(fh.name, self.path)


@dataclass(frozen=True)
class Handled:
    """One stable study the watcher dealt with.

    Attributes:
        sequence: The change's number in the feed.
        study_uid: The Study Instance UID.
        result: The gateway's result; None when refused or not predicted again.
        refusal: Why it was refused ("" otherwise).
        unchanged_since: The result SR this watcher stored for the study when nothing but that
            SR arrived since, so the study was not predicted again ("" otherwise).
    """

    sequence: int
    study_uid: str
    result: GatewayResult | None
    refusal: str = ""
    unchanged_since: str = ""


class StatusFile:
    """One JSON line per handled study: when, which change, the study, the outcome and why.

    Outcomes: ``done`` (the SR is in the PACS), ``failed`` (refused, with the cause; the watch
    went on), ``pending`` (the server or the PACS could not be reached; tried again). Study
    Instance UIDs and causes only: no patient name, ID or birth date is written.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def record(self, sequence: int, study_uid: str, outcome: str, detail: str = "") -> None:
        """Append one line (flushed and synced: a crash loses nothing written)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sequence": sequence,
            "study": study_uid,
            "outcome": outcome,
            "detail": detail,
        }
        with self.path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last line of each study, by Study Instance UID."""
        if not self.path.exists():
            return {}
        latest: dict[str, dict[str, Any]] = {}
        for text in self.path.read_text().splitlines():
            if text.strip():
                line = json.loads(text)
                latest[line["study"]] = line
        return latest


class OrthancChanges:
    """Orthanc's REST ``/changes`` feed.

    Args:
        url: The REST base URL (``http://host:8042``).
        session: A ``requests.Session`` carrying the credentials.
    """

    def __init__(self, url: str, session: Any) -> None:
        self.url = url.rstrip("/")
        self.session = session

    def since(self, sequence: int, limit: int = 100) -> tuple[list[dict[str, Any]], int, bool]:
        """``(changes, last sequence, done)`` after ``sequence``."""
        answer = self._get(f"/changes?since={sequence}&limit={limit}")
        return answer["Changes"], int(answer["Last"]), bool(answer["Done"])

    def study_uid(self, orthanc_id: str) -> str:
        """The Study Instance UID of an Orthanc study id."""
        return str(self._get(f"/studies/{orthanc_id}")["MainDicomTags"]["StudyInstanceUID"])

    def instance_uid(self, orthanc_id: str) -> str:
        """The SOP Instance UID of an Orthanc instance id."""
        return str(self._get(f"/instances/{orthanc_id}")["MainDicomTags"]["SOPInstanceUID"])

    def study_of_instance(self, orthanc_id: str) -> str:
        """The Study Instance UID of the study an Orthanc instance belongs to."""
        study = self._get(f"/instances/{orthanc_id}/study")
        return str(study["MainDicomTags"]["StudyInstanceUID"])

    def _get(self, path: str) -> Any:
        response = self.session.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()


NEW_INSTANCE = "NewInstance"

UNREACHABLE = (ModelUnavailableError, requests.RequestException)
"""The failures that leave a study pending: the server or the PACS could not be reached."""


class Backoff:
    """Waits after passes that could not reach the server or the PACS.

    ``first_s``, doubling with each failure in a row, at most ``max_s``; back to ``first_s``
    after a pass that worked.
    """

    def __init__(self, first_s: float = 2.0, max_s: float = 60.0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"Backoff needs 0 < first_s <= max_s, got {first_s} and {max_s}")
        self.first_s, self.max_s = first_s, max_s
        self._failures = 0

    def failed(self) -> float:
        """The wait after one more failure in a row."""
        wait = min(self.max_s, self.first_s * 2.0**self._failures)
        self._failures += 1
        return wait

    def reset(self) -> None:
        """A pass worked: the next failure waits ``first_s`` again."""
        self._failures = 0


class Watcher:
    """Predicts each study that becomes stable in Orthanc, once.

    Storing a result SR changes the study, so Orthanc reports it stable once more. The watcher
    remembers the SR it stored for each study (at most ``remember`` studies) and, while nothing
    but its own SRs arrives in that study (``NewInstance`` changes), takes the next stable change
    as handled without predicting again. After a restart it does not know, so it predicts again
    and finds the SR already there: wasted work, never a second SR.

    Args:
        gateway: Predicts a study and stores its SR.
        changes: Orthanc's change feed.
        cursor: The last handled change.
        status: Where each study's outcome is recorded (none when None).
        remember: How many studies' stored SRs are kept in memory.
    """

    def __init__(
        self,
        gateway: Gateway,
        changes: OrthancChanges,
        cursor: Cursor,
        status: StatusFile | None = None,
        remember: int = 10_000,
    ) -> None:
        self.gateway, self.changes, self.cursor, self.status = gateway, changes, cursor, status
        self.remember = remember
        self._stored: OrderedDict[str, str] = OrderedDict()  # study UID -> SR stored by us

    def run_pass(self) -> list[Handled]:
        """Handle every stable study the feed holds now; returns what was done.

        Raises:
            ModelUnavailableError, requests.RequestException: The server or the PACS could not
                be reached (the study is recorded as pending; the cursor stays before it).
        """
        handled = []
        for sequence, study_uid in self._stable_studies():
            handled.append(self._handle(sequence, study_uid))
            self.cursor.save(sequence)
        return handled

    def run(
        self,
        poll_s: float = 2.0,
        max_backoff_s: float = 60.0,
        keep_going: Callable[[], bool] = lambda: True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Pass over the feed every ``poll_s`` seconds while ``keep_going()``.

        A server or PACS that cannot be reached is waited for with a bounded backoff
        (:class:`Backoff` from ``poll_s`` to ``max_backoff_s``); the study stays pending and is
        tried again, never skipped.
        """
        backoff = Backoff(poll_s, max(poll_s, max_backoff_s))
        while keep_going():
            try:
                self.run_pass()
            except UNREACHABLE as exc:
                wait = backoff.failed()
                log.warning("unreachable, retrying in %.0f s: %s", wait, type(exc).__name__)
                sleep(wait)
                continue
            backoff.reset()
            sleep(poll_s)

    def _handle(self, sequence: int, study_uid: str) -> Handled:
        status = self.status
        stored = self._stored.get(study_uid)
        if stored is not None:
            if status is not None:
                status.record(sequence, study_uid, "done", stored)
            log.info("study %s: unchanged since its SR was stored, not predicted again", study_uid)
            return Handled(sequence, study_uid, None, unchanged_since=stored)
        try:
            result = self.gateway.predict_study(study_uid)
        except UNREACHABLE as exc:
            if status is not None:
                status.record(sequence, study_uid, "pending", type(exc).__name__)
            raise
        except (PacsError, PreprocessingError, InvalidInputError) as exc:
            if status is not None:
                status.record(sequence, study_uid, "failed", str(exc))
            log.warning("study %s refused: %s", study_uid, exc)
            return Handled(sequence, study_uid, None, str(exc))
        if status is not None:
            status.record(sequence, study_uid, "done", result.sr_sop_instance_uid)
        what = "stored" if result.written else "already stored"
        log.info("study %s: P=%.4f, SR %s", study_uid, result.prediction.probability, what)
        self._stored[study_uid] = result.sr_sop_instance_uid
        while len(self._stored) > self.remember:
            self._stored.popitem(last=False)
        return Handled(sequence, study_uid, result)

    def _stable_studies(self, limit: int = 100) -> Iterator[tuple[int, str]]:
        """``(sequence, study UID)`` of each stable study after the cursor, in feed order."""
        since = self.cursor.read()
        while True:
            batch, last, done = self.changes.since(since, limit)
            for change in batch:
                sequence = int(change["Seq"])
                if change.get("ChangeType") == STABLE_STUDY:
                    yield sequence, self.changes.study_uid(str(change["ID"]))
                    continue
                if change.get("ChangeType") == NEW_INSTANCE:
                    self._arrived(str(change["ID"]))
                self.cursor.save(sequence)  # nothing else to do for it
            since = last
            if done or not batch:
                return

    def _arrived(self, orthanc_id: str) -> None:
        """An instance arrived: unless it is an SR of ours, its study has changed."""
        if not self._stored:
            return
        if self.changes.instance_uid(orthanc_id) in self._stored.values():
            return
        self._stored.pop(self.changes.study_of_instance(orthanc_id), None)
