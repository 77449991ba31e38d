"""Security and privacy against the real server: TLS, mutual TLS, and no patient data in outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aln.client import AlnClient, ImageInput, InvalidInputError, ModelUnavailableError
from aln.preprocessing import contract
from aln.serving.server import EmbeddedServer, ServerConfig
from tests.corpus import bad_studies, edit

PHI = {
    "PatientName": "ZZPHI^SENTINEL",
    "PatientID": "ZZPHI-ID-8731",
    "PatientBirthDate": "19610704",
    "AccessionNumber": "ZZPHI-ACC-55",
    "InstitutionName": "ZZPHI General Hospital",
    "ReferringPhysicianName": "ZZPHI^DOCTOR",
    "OtherPatientIDs": "ZZPHI-OTHER-9",
    "PatientAddress": "ZZPHI 1 Sentinel Road",
}


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    folder = tmp_path_factory.mktemp("tls")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=aln-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=folder,
    )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=aln-{name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=folder,
        )
        (folder / f"{name}.ext").write_text(extension + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
            cwd=folder,
        )
    return folder


def _serve(served, tmp_path, tls):
    config = ServerConfig.on_free_ports(served[0].config.repository, grpc_tls=tls)
    server = EmbeddedServer(config, log=tmp_path / "tls.log").start()
    server.wait_until_ready(contract.ENSEMBLE, timeout_s=180)
    return server, f"127.0.0.1:{config.grpc_port}"


def test_tls_and_mutual_tls(served, study, certificates, tmp_path):
    image = ImageInput(study.dicom, study.lesion_centre)
    c = certificates
    server, url = _serve(served, tmp_path, (c / "server.pem", c / "server.key", None))
    try:
        with AlnClient(url, ssl=True, root_certificates=str(c / "ca.pem")) as client:
            assert 0 < client.predict(image, study.clinical).probability < 1
        with AlnClient(url, timeout_s=5) as plain, pytest.raises(ModelUnavailableError):
            plain.predict(image, study.clinical)  # plaintext is refused by a TLS port
    finally:
        server.stop()
    server, url = _serve(served, tmp_path, (c / "server.pem", c / "server.key", c / "ca.pem"))
    try:
        with AlnClient(
            url,
            ssl=True,
            root_certificates=str(c / "ca.pem"),
            private_key=str(c / "client.key"),
            certificate_chain=str(c / "client.pem"),
        ) as client:
            assert 0 < client.predict(image, study.clinical).probability < 1
        with (
            AlnClient(url, ssl=True, root_certificates=str(c / "ca.pem"), timeout_s=5) as anonymous,
            pytest.raises(ModelUnavailableError),
        ):
            anonymous.predict(image, study.clinical)  # no client certificate: refused
    finally:
        server.stop()


def test_no_patient_identifiers_in_any_output(served, study, tmp_path):
    planted = edit(study.dicom, **PHI)
    assert b"ZZPHI" in planted
    outputs = []
    with AlnClient(served[2]) as client:
        prediction = client.predict(ImageInput(planted, study.lesion_centre), study.clinical)
        outputs.append(json.dumps(prediction.provenance))
        phi_case = type(
            "Case",
            (),
            {
                "dicom": planted,
                "lesion_centre": study.lesion_centre,
                "clinical": study.clinical,
                "laterality": study.laterality,
            },
        )
        for bad in bad_studies(phi_case):
            try:
                client.predict(
                    ImageInput(bad.dicom, bad.lesion, bad.bbox, **bad.options), bad.clinical
                )
            except InvalidInputError as error:
                outputs.append(str(error))
    path = tmp_path / "planted.dcm"
    path.write_bytes(planted)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "aln",
            "preprocess",
            str(path),
            "--lesion",
            *map(str, study.lesion_centre),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    outputs += [cli.stdout, cli.stderr, served[0]._log_target.read_text()]
    text = "\n".join(outputs)
    assert len(outputs) > 30
    for keyword, value in PHI.items():
        for fragment in {value, value.replace("^", " ")}:
            assert fragment not in text, f"{keyword} leaked"
