"""``aln pacs watch``: every stable study once, across restarts, against Orthanc and Triton."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from aln.client import AlnClient, ModelUnavailableError, RetryPolicy
from aln.pacs.gateway import Gateway
from aln.pacs.orthanc import OrthancNode, installed
from aln.pacs.records import FolderRecords
from aln.pacs.watch import STABLE_STUDY, Cursor, OrthancChanges, StatusFile, Watcher
from tests.integration.test_pacs_gateway import new_study
from tests.pacs.test_marks import G, group, report

pytestmark = pytest.mark.skipif(
    not installed(),
    reason="Orthanc comes with make install (Debian orthanc, orthanc-dicomweb)",
)


@pytest.fixture(scope="module")
def pacs():
    with OrthancNode(stable_age_s=1) as node:
        session = requests.Session()
        session.auth = (node.username, node.password)
        yield node, DICOMwebClient(url=node.dicomweb_url, session=session), session


def stable_changes(changes, study_uid):
    """The feed's StableStudy changes of one study, in order."""
    batch, _, _ = changes.since(0, 1000)
    return [
        c["Seq"]
        for c in batch
        if c["ChangeType"] == STABLE_STUDY and changes.study_uid(c["ID"]) == study_uid
    ]


def wait_stable(changes, studies, timeout_s=30.0, times=1):
    """Wait until Orthanc has reported every study of ``studies`` stable ``times`` times."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(len(stable_changes(changes, s)) >= times for s in studies):
            return
        time.sleep(0.5)
    raise AssertionError(f"studies {studies} never became stable {times} time(s)")


def result_srs(dicomweb, study_uid):
    return [s for s in dicomweb.search_for_series(study_uid) if s["00080060"]["Value"][0] == "SR"]


def test_each_stable_study_is_handled_once_across_restarts(served, pacs, tmp_path):
    node, dicomweb, session = pacs
    changes = OrthancChanges(node.url, session)
    records = tmp_path / "records"
    records.mkdir()
    cursor_file = tmp_path / "cursor"
    status = StatusFile(tmp_path / "status.jsonl")

    case_a, a = new_study((node, dicomweb), 41)
    (records / f"{a.StudyInstanceUID}.json").write_text(json.dumps(case_a.clinical))
    wait_stable(changes, [a.StudyInstanceUID])
    with AlnClient(served[2], timeout_s=60) as client:
        watcher = Watcher(
            Gateway(dicomweb, client, FolderRecords(records)), changes, Cursor(cursor_file), status
        )
        first = watcher.run_pass()
        assert [(h.study_uid, h.result.written) for h in first] == [(a.StudyInstanceUID, True)]
        # past A's StableStudy (and the stable series and patient changes that follow it)
        assert Cursor(cursor_file).read() >= first[0].sequence

        _, b = new_study((node, dicomweb), 42, marked=False)  # refused: no marks
        case_c, c = new_study((node, dicomweb), 43)
        (records / f"{c.StudyInstanceUID}.json").write_text(json.dumps(case_c.clinical))
        # A's own result SR makes A stable a second time
        wait_stable(changes, [a.StudyInstanceUID], times=2)
        wait_stable(changes, [b.StudyInstanceUID, c.StudyInstanceUID])
        second = {h.study_uid: h for h in watcher.run_pass()}
        assert set(second) == {a.StudyInstanceUID, b.StudyInstanceUID, c.StudyInstanceUID}
        # nothing but its own SR arrived in A: taken as handled, not predicted again
        assert second[a.StudyInstanceUID].result is None
        assert second[a.StudyInstanceUID].unchanged_since == first[0].result.sr_sop_instance_uid
        assert second[b.StudyInstanceUID].result is None
        assert "no primary lesion mark" in second[b.StudyInstanceUID].refusal
        assert second[c.StudyInstanceUID].result.written

        # the radiologist adds the auxiliary region to A: A has changed, so it is predicted
        # again, and the new crops give a new SR beside the first
        marks = report([a], [group(a, G.CIRCLE, [[300, 300], [340, 300]], "auxiliary region")])
        dicomweb.store_instances([marks])
        wait_stable(changes, [a.StudyInstanceUID], times=3)
        third = {h.study_uid: h for h in watcher.run_pass()}
        assert third[a.StudyInstanceUID].result.written
        assert third[a.StudyInstanceUID].result.prediction.provenance["auxiliary"]

        # a restart after A's second SR was stored but before the cursor moved: the new watcher
        # does not know the SR is its own, predicts A again and stores nothing
        Cursor(cursor_file).save(stable_changes(changes, a.StudyInstanceUID)[2] - 1)
        restarted = Watcher(
            Gateway(dicomweb, client, FolderRecords(records)), changes, Cursor(cursor_file), status
        )
        again = restarted.run_pass()
    assert again[0].study_uid == a.StudyInstanceUID and not again[0].result.written
    # two radiologist reports (the lesion, the auxiliary region) and two results: never a third
    assert len(result_srs(dicomweb, a.StudyInstanceUID)) == 4
    latest = status.latest()
    assert {k: v["outcome"] for k, v in latest.items()} == {
        a.StudyInstanceUID: "done",
        b.StudyInstanceUID: "failed",
        c.StudyInstanceUID: "done",
    }
    assert "no primary lesion mark" in latest[b.StudyInstanceUID]["detail"]


def test_an_unreachable_server_leaves_the_study_pending_and_the_cursor_put(served, pacs, tmp_path):
    node, dicomweb, session = pacs
    changes = OrthancChanges(node.url, session)
    case, study = new_study((node, dicomweb), 44)
    records = tmp_path / "records"
    records.mkdir()
    (records / f"{study.StudyInstanceUID}.json").write_text(json.dumps(case.clinical))
    wait_stable(changes, [study.StudyInstanceUID])
    cursor, status = Cursor(tmp_path / "cursor"), StatusFile(tmp_path / "status.jsonl")
    stable = stable_changes(changes, study.StudyInstanceUID)
    cursor.save(stable[0] - 1)  # as a watcher that has handled everything before this study
    nowhere = AlnClient("127.0.0.1:1", timeout_s=2, retry=RetryPolicy(max_attempts=2))
    with nowhere, pytest.raises(ModelUnavailableError):
        Watcher(
            Gateway(dicomweb, nowhere, FolderRecords(records)), changes, cursor, status
        ).run_pass()
    assert cursor.read() == stable[0] - 1  # not moved past the pending study
    assert status.latest()[study.StudyInstanceUID]["outcome"] == "pending"
    with AlnClient(served[2], timeout_s=60) as client:
        gateway = Gateway(dicomweb, client, FolderRecords(records))
        done = Watcher(gateway, changes, cursor, status).run_pass()
    assert [h.study_uid for h in done if h.result] == [study.StudyInstanceUID]
    assert status.latest()[study.StudyInstanceUID]["outcome"] == "done"


PLANTED = {
    "PatientName": "Plantedname^Alnsecret",
    "PatientID": "PLANTED-ID-90210",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ACCPLANTED77",
}
"""Patient identifiers planted in the studies; none may appear in a log or a status record."""


def test_a_killed_watch_resumes_and_logs_no_patient_identifier(served, pacs, tmp_path):
    """`aln pacs watch` SIGKILLed after its first study, then run again: every study handled
    once, one SR each, and neither run's output nor the status file names the patient."""
    node, dicomweb, session = pacs
    changes = OrthancChanges(node.url, session)
    records, state = tmp_path / "records", tmp_path / "state"
    records.mkdir()
    Cursor(state / "cursor").save(int(session.get(node.url + "/changes?last").json()["Last"]))
    studies = []
    for seed in (51, 52, 53):
        case, image = new_study((node, dicomweb), seed, **PLANTED)
        if seed != 53:  # the last has no clinical record: refused
            (records / f"{image.StudyInstanceUID}.json").write_text(json.dumps(case.clinical))
        studies.append(str(image.StudyInstanceUID))
    wait_stable(changes, studies)
    command = [
        sys.executable, "-m", "aln", "pacs", "watch",
        "--pacs", node.dicomweb_url, "--pacs-user", node.username, "--orthanc", node.url,
        "--records", str(records), "--cursor", str(state / "cursor"), "--url", served[2],
        "--poll-s", "0.5",
    ]  # fmt: skip
    env = {**os.environ, "ALN_PACS_PASSWORD": node.password}
    status = StatusFile(state / "status.jsonl")
    with (tmp_path / "first.log").open("w") as log:
        watch = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while not any(v["outcome"] == "done" for v in status.latest().values()):
                assert watch.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "the watch handled nothing in 120 s"
                time.sleep(0.05)
        finally:
            watch.send_signal(signal.SIGKILL)
            watch.wait()
    handled_before = len(status.latest())
    resumed = subprocess.run(command + ["--once"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    # (an earlier test's study may also turn stable again here; only these three are checked)
    outcomes = {k: v["outcome"] for k, v in status.latest().items() if k in studies}
    assert outcomes == dict(zip(studies, ["done", "done", "failed"], strict=True)), (
        handled_before,
        outcomes,
    )
    assert "No clinical record" in status.latest()[studies[2]]["detail"]
    for study in studies[:2]:
        assert len(result_srs(dicomweb, study)) == 2  # the marks and one result
    assert result_srs(dicomweb, studies[2]) == [result_srs(dicomweb, studies[2])[0]]  # marks only
    said = "\n".join(
        [
            (tmp_path / "first.log").read_text(),
            resumed.stdout,
            resumed.stderr,
            status.path.read_text(),
        ]
    )
    assert studies[0] in said  # the logs are there, and name studies by UID
    for value in PLANTED.values():
        for shown in {value, value.replace("^", " "), value.split("^")[0]}:
            assert shown not in said, f"{shown!r} appears in the gateway's output"
