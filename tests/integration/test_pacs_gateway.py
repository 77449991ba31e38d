"""The gateway end to end: a study in a real Orthanc, marks from its SR, Triton, the SR back."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from aln.client import AlnClient, ImageInput
from aln.pacs.dimse import store
from aln.pacs.gateway import Gateway
from aln.pacs.marks import Mark, MarkError
from aln.pacs.orthanc import OrthancNode, installed
from aln.pacs.records import FolderRecords, RecordNotFoundError
from aln.pacs.report import read_probability
from aln.synthetic.mammogram import synth_case
from tests.pacs.test_marks import G, group, report

pytestmark = pytest.mark.skipif(
    not installed(),
    reason="Orthanc comes with make install (Debian orthanc, orthanc-dicomweb)",
)


@pytest.fixture(scope="module")
def pacs():
    with OrthancNode() as node:
        session = requests.Session()
        session.auth = (node.username, node.password)
        yield node, DICOMwebClient(url=node.dicomweb_url, session=session)


def new_study(pacs, seed, *, marked=True, **identity):
    """A synthetic study in the PACS as a hospital puts it there: the image by C-STORE (the
    modality), the radiologist's marks SR by STOW-RS (the viewer). ``identity`` overrides
    patient attributes (planted identifiers)."""
    node, dicomweb = pacs
    case = synth_case(np.random.default_rng(seed), "hologic", "explicit", shape=(1400, 1150))
    image = pydicom.dcmread(io.BytesIO(case.dicom))
    for keyword, value in identity.items():
        setattr(image, keyword, value)
    store([image], "127.0.0.1", node.dicom_port, node.aet)
    if marked:
        marks = report([image], [group(image, G.POINT, [case.lesion_centre], "primary lesion")])
        dicomweb.store_instances([marks])
    return case, image


def test_a_marked_study_is_predicted_and_its_sr_written_once(served, pacs, tmp_path):
    _, dicomweb = pacs
    case, image = new_study(pacs, 31)
    (tmp_path / f"{image.StudyInstanceUID}.json").write_text(json.dumps(case.clinical))
    with AlnClient(served[2], timeout_s=60) as client:
        gateway = Gateway(dicomweb, client, FolderRecords(tmp_path))
        first = gateway.predict_study(image.StudyInstanceUID)
        again = gateway.predict_study(image.StudyInstanceUID)
        direct = client.predict(ImageInput(case.dicom, case.lesion_centre), case.clinical)
    assert first.written and not again.written  # the same model version writes one SR
    assert again.sr_sop_instance_uid == first.sr_sop_instance_uid
    assert abs(first.prediction.probability - direct.probability) <= 1e-6
    series = dicomweb.search_for_series(image.StudyInstanceUID)
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["MG", "SR", "SR"]  # marks, result
    found = dicomweb.search_for_instances(
        image.StudyInstanceUID, search_filters={"SOPInstanceUID": first.sr_sop_instance_uid}
    )
    assert len(found) == 1
    stored = dicomweb.retrieve_instance(
        image.StudyInstanceUID, found[0]["0020000E"]["Value"][0], first.sr_sop_instance_uid
    )
    assert abs(read_probability(stored) - direct.probability) <= 1e-6


def test_an_unmarked_study_takes_a_one_off_lesion_or_is_refused(served, pacs, tmp_path):
    _, dicomweb = pacs
    case, image = new_study(pacs, 32, marked=False)
    (tmp_path / f"{image.AccessionNumber}.json").write_text(json.dumps(case.clinical))
    with AlnClient(served[2], timeout_s=60) as client:
        gateway = Gateway(dicomweb, client, FolderRecords(tmp_path))
        with pytest.raises(MarkError, match="no primary lesion mark"):
            gateway.predict_study(image.StudyInstanceUID)
        lesion = Mark(str(image.SOPInstanceUID), case.lesion_centre, None, "POINT", "override")
        done = gateway.predict_study(image.StudyInstanceUID, lesion)
        assert done.written and 0 < done.prediction.probability < 1
        elsewhere = Mark("1.2.3.4", case.lesion_centre, None, "POINT", "override")
        with pytest.raises(MarkError, match="is not an image of this study"):
            gateway.predict_study(image.StudyInstanceUID, elsewhere)


def test_a_study_without_a_clinical_record_is_refused_naming_the_files(served, pacs, tmp_path):
    _, dicomweb = pacs
    _, image = new_study(pacs, 33)
    with AlnClient(served[2], timeout_s=60) as client:
        gateway = Gateway(dicomweb, client, FolderRecords(tmp_path))
        with pytest.raises(
            RecordNotFoundError,
            match=f"no {image.StudyInstanceUID}.json, nor one under the study's accession number",
        ) as refused:
            gateway.predict_study(image.StudyInstanceUID)
        assert str(image.AccessionNumber) not in str(refused.value)


def test_cli_pacs_predict_writes_once_and_names_a_missing_record(served, pacs, tmp_path):
    node, _ = pacs
    case, image = new_study(pacs, 34)
    records = tmp_path / "records"
    records.mkdir()
    command = [
        sys.executable,
        "-m",
        "aln",
        "pacs",
        "predict",
        "--study",
        image.StudyInstanceUID,
        "--pacs",
        node.dicomweb_url,
        "--pacs-user",
        node.username,
        "--records",
        str(records),
        "--url",
        served[2],
        "--json",
    ]
    env = {**os.environ, "ALN_PACS_PASSWORD": node.password}
    missing = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert missing.returncode == 2 and "No clinical record for study" in missing.stderr
    (records / f"{image.StudyInstanceUID}.json").write_text(json.dumps(case.clinical))
    runs = [
        subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    answers = [json.loads(r.stdout) for r in runs]
    assert [a["written"] for a in answers] == [True, False]
    assert answers[0]["sr_sop_instance_uid"] == answers[1]["sr_sop_instance_uid"]


def test_demo_with_pacs_files_the_result_beside_the_study(tmp_path):
    """`aln demo --once --pacs`: the study sent by C-STORE, the gateway's SR stored, Orthanc's web
    interface named, and Orthanc stopped at exit."""
    done = subprocess.run(
        [sys.executable, "-m", "aln", "demo", "--once", "--pacs", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "by C-STORE to ALNORTHANC" in done.stdout
    assert "[PACS] study" in done.stdout and "stored beside it" in done.stdout
    shown = re.search(r"web interface: (http://127\.0\.0\.1:\d+)/app/explorer\.html", done.stdout)
    assert shown, done.stdout
    assert "aln pacs watch --pacs " in done.stdout
    with pytest.raises(urllib.error.URLError):  # stopped with the demo
        urllib.request.urlopen(shown.group(1) + "/system", timeout=2)
