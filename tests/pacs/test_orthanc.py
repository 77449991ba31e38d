"""A real Orthanc from Debian on loopback: authentication, DICOMweb in and out, a clean stop."""

from __future__ import annotations

import io
import urllib.error
import urllib.request

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from aln.pacs.dimse import store
from aln.pacs.errors import PacsError
from aln.pacs.orthanc import OrthancNode, installed
from aln.pacs.report import build_report, read_probability
from aln.preprocessing.decision import Decision
from aln.synthetic.mammogram import synth_case
from tests.pacs.test_report import prediction

pytestmark = pytest.mark.skipif(
    not installed(),
    reason="Orthanc comes with make install (Debian orthanc, orthanc-dicomweb)",
)


@pytest.fixture(scope="module")
def node():
    with OrthancNode() as running:
        yield running


def dicomweb(node):
    session = requests.Session()
    session.auth = (node.username, node.password)
    return DICOMwebClient(url=node.dicomweb_url, session=session)


def test_anonymous_requests_are_refused(node):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(node.url + "/system", timeout=10)
    assert refused.value.code == 401
    assert node.get("/system")["DicomAet"] == "ALNORTHANC"


def test_a_study_goes_in_and_the_result_sr_comes_back_beside_it(node):
    case = synth_case(np.random.default_rng(9), "siemens", "jpeg2000", shape=(600, 500))
    image = pydicom.dcmread(io.BytesIO(case.dicom))
    store([image], "127.0.0.1", node.dicom_port, node.aet)  # as a modality sends it
    client = dicomweb(node)
    studies = client.search_for_studies(search_filters={"PatientID": image.PatientID})
    assert [s["0020000D"]["Value"][0] for s in studies] == [image.StudyInstanceUID]
    fetched = client.retrieve_instance(
        image.StudyInstanceUID, image.SeriesInstanceUID, image.SOPInstanceUID
    )
    assert fetched.SOPInstanceUID == image.SOPInstanceUID
    assert fetched.file_meta.TransferSyntaxUID == image.file_meta.TransferSyntaxUID  # as sent
    sr = build_report(image, prediction(Decision.LOW_RISK))
    client.store_instances([sr])
    series = client.search_for_series(image.StudyInstanceUID)
    assert {s["00080060"]["Value"][0] for s in series} == {"MG", "SR"}
    stored = client.retrieve_instance(
        image.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID
    )
    assert abs(read_probability(stored) - 0.123456789) <= 1e-6


def test_a_c_store_nobody_answers_is_refused_naming_the_node(node):
    case = synth_case(np.random.default_rng(10), "siemens", "explicit", shape=(300, 250))
    image = pydicom.dcmread(io.BytesIO(case.dicom))
    with pytest.raises(PacsError, match=r"ALNORTHANC@127.0.0.1:1 refused or did not answer"):
        store([image], "127.0.0.1", 1, node.aet, timeout_s=5)


def test_stop_frees_the_port_and_the_storage():
    node = OrthancNode().start()
    url, work = node.url, node._work
    node.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/system", timeout=2)
    assert not work.exists()
