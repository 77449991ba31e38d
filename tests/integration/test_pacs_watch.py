"""``aln pacs watch``: every stable study once, across restarts, against Orthanc and Triton."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from aln.client import AlnClient, ModelUnavailableError, RetryPolicy
from aln.pacs.errors import PacsError
from aln.pacs.gateway import Gateway
from aln.pacs.orthanc import DICOMWEB_PLUGIN, OrthancNode
from aln.pacs.records import FolderRecords
from aln.pacs.watch import STABLE_STUDY, Cursor, OrthancChanges, StatusFile, run_pass
from tests.integration.test_pacs_gateway import new_study

pytestmark = pytest.mark.skipif(
    shutil.which("Orthanc") is None and not DICOMWEB_PLUGIN.exists(),
    reason="Orthanc comes with make install (Debian orthanc, orthanc-dicomweb)",
)


@pytest.fixture(scope="module")
def pacs():
    with OrthancNode(stable_age_s=1) as node:
        session = requests.Session()
        session.auth = (node.username, node.password)
        yield node, DICOMwebClient(url=node.dicomweb_url, session=session), session


def wait_stable(changes, studies, timeout_s=30.0):
    """Wait until Orthanc has reported every study of ``studies`` as stable."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch, _, _ = changes.since(0, 1000)
        stable = {changes.study_uid(c["ID"]) for c in batch if c["ChangeType"] == STABLE_STUDY}
        if set(studies) <= stable:
            return
        time.sleep(0.5)
    raise AssertionError(f"studies {studies} never became stable")


def test_each_stable_study_is_handled_once_across_restarts(served, pacs, tmp_path):
    node, dicomweb, session = pacs
    changes = OrthancChanges(node.url, session)
    records = tmp_path / "records"
    records.mkdir()
    cursor_file = tmp_path / "cursor"
    status = StatusFile(tmp_path / "status.jsonl")

    def gateway(client):
        return Gateway(dicomweb, client, FolderRecords(records))

    case_a, a = new_study((node, dicomweb), 41)
    (records / f"{a.StudyInstanceUID}.json").write_text(json.dumps(case_a.clinical))
    wait_stable(changes, [a.StudyInstanceUID])
    with AlnClient(served[2], timeout_s=60) as client:
        first = run_pass(gateway(client), changes, Cursor(cursor_file), status)
        assert [(h.study_uid, h.result.written) for h in first] == [(a.StudyInstanceUID, True)]
        # past A's StableStudy (and the stable series and patient changes that follow it)
        assert Cursor(cursor_file).read() >= first[0].sequence

        _, b = new_study((node, dicomweb), 42, marked=False)  # refused: no marks
        case_c, c = new_study((node, dicomweb), 43)
        (records / f"{c.StudyInstanceUID}.json").write_text(json.dumps(case_c.clinical))
        wait_stable(changes, [b.StudyInstanceUID, c.StudyInstanceUID])
        # a restart: a new watcher on the same cursor file
        second = run_pass(gateway(client), changes, Cursor(cursor_file), status)
        outcomes = {h.study_uid: h for h in second}
        # A's own result SR made A stable once more: it is seen again and nothing is written
        assert set(outcomes) <= {a.StudyInstanceUID, b.StudyInstanceUID, c.StudyInstanceUID}
        assert {b.StudyInstanceUID, c.StudyInstanceUID} <= set(outcomes)
        if a.StudyInstanceUID in outcomes:
            assert not outcomes[a.StudyInstanceUID].result.written
        assert outcomes[b.StudyInstanceUID].result is None
        assert "no primary lesion mark" in outcomes[b.StudyInstanceUID].refusal
        assert outcomes[c.StudyInstanceUID].result.written
        wait_stable(changes, [c.StudyInstanceUID])
        later = run_pass(gateway(client), changes, Cursor(cursor_file), status)
        assert all(h.result is not None and not h.result.written for h in later)

        # a crash after A's SR was stored but before the cursor moved: A again, nothing stored
        Cursor(cursor_file).save(first[0].sequence - 1)
        again = run_pass(gateway(client), changes, Cursor(cursor_file), status)
    assert again[0].study_uid == a.StudyInstanceUID and not again[0].result.written
    results = [
        s
        for s in dicomweb.search_for_series(a.StudyInstanceUID)
        if s["00080060"]["Value"][0] == "SR"
    ]
    assert len(results) == 2  # the radiologist's marks and one result: never a second result
    latest = status.latest()
    assert {k: v["outcome"] for k, v in latest.items()} == {
        a.StudyInstanceUID: "done",
        b.StudyInstanceUID: "failed",
        c.StudyInstanceUID: "done",
    }
    assert "no primary lesion mark" in latest[b.StudyInstanceUID]["detail"]
    # no patient identifier in the status records
    text = status.path.read_text()
    for image in (a, b, c):
        assert str(image.PatientID) not in text and str(image.PatientName) not in text


def test_an_unreachable_server_leaves_the_study_pending_and_the_cursor_put(served, pacs, tmp_path):
    node, dicomweb, session = pacs
    changes = OrthancChanges(node.url, session)
    case, study = new_study((node, dicomweb), 44)
    records = tmp_path / "records"
    records.mkdir()
    (records / f"{study.StudyInstanceUID}.json").write_text(json.dumps(case.clinical))
    wait_stable(changes, [study.StudyInstanceUID])
    cursor, status = Cursor(tmp_path / "cursor"), StatusFile(tmp_path / "status.jsonl")
    batch, _, _ = changes.since(0, 1000)
    stable = [
        c["Seq"]
        for c in batch
        if c["ChangeType"] == STABLE_STUDY and changes.study_uid(c["ID"]) == study.StudyInstanceUID
    ]
    cursor.save(stable[0] - 1)  # as a watcher that has handled everything before this study
    nowhere = AlnClient("127.0.0.1:1", timeout_s=2, retry=RetryPolicy(max_attempts=2))
    with nowhere, pytest.raises(ModelUnavailableError):
        run_pass(Gateway(dicomweb, nowhere, FolderRecords(records)), changes, cursor, status)
    assert cursor.read() == stable[0] - 1  # not moved past the pending study
    assert status.latest()[study.StudyInstanceUID]["outcome"] == "pending"
    with AlnClient(served[2], timeout_s=60) as client:
        done = run_pass(Gateway(dicomweb, client, FolderRecords(records)), changes, cursor, status)
    assert [h.study_uid for h in done if h.result] == [study.StudyInstanceUID]
    assert status.latest()[study.StudyInstanceUID]["outcome"] == "done"


def test_the_cursor_is_written_atomically_and_checked(tmp_path):
    cursor = Cursor(tmp_path / "state" / "cursor")
    assert cursor.read() == 0
    cursor.save(17)
    cursor.save(18)
    assert cursor.read() == 18
    assert sorted(p.name for p in cursor.path.parent.iterdir()) == ["cursor"]  # no temp left
    cursor.path.write_text("seventeen")
    with pytest.raises(PacsError, match="holds 'seventeen', not a change number"):
        cursor.read()
