"""``aln demo``: the main job of ``make run``, end to end on a synthetic study.

Writes a seeded demo checkpoint, exports it to ONNX (parity enforced), builds the model
repository, starts the Triton server bundled in ``nvidia-pytriton``, sends a synthetic study
through the gRPC client, prints the prediction and its provenance, and keeps serving until
interrupted (``--once`` stops after the first answer). Steps whose outputs exist are reused.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path
from typing import Any

from aln.model.backbones import BACKBONES, DEFAULT_BACKBONE
from aln.serving.spec import EMBEDDED_FORMATS, spec_default


def register(commands: Any) -> None:
    """Add ``aln demo`` to the ``aln`` parser."""
    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on a synthetic study (what `make run` runs)",
        description="Demo checkpoint -> ONNX -> model repository -> Triton server -> one "
        "synthetic study through the gRPC client. Demo weights have NO clinical validity.",
    )
    demo.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    demo.add_argument("--backbone", choices=tuple(BACKBONES), default=DEFAULT_BACKBONE)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--once", action="store_true", help="stop after the first prediction")
    demo.add_argument(
        "--engine-format",
        choices=EMBEDDED_FORMATS,
        default=spec_default("engine_format"),
        help="engines in fp32: ONNX Runtime (default) or OpenVINO; int8 and bf16 need a trained "
        "checkpoint and `aln export`",
    )
    demo.add_argument(
        "--pacs",
        action="store_true",
        help="also start Orthanc (Debian), send it the study and a radiologist's marks SR by "
        "C-STORE, and run the PACS gateway: the result SR lands beside the study; Orthanc "
        "serves with the server, its web interface URL printed",
    )
    demo.add_argument("--grpc-port", type=int, default=8001)
    demo.add_argument("--http-port", type=int, default=8000)
    demo.add_argument("--metrics-port", type=int, default=8002)
    demo.set_defaults(handler=run_demo)


def _port(preferred: int) -> int:
    """``preferred`` when it is free on loopback, else any free port."""
    from aln.serving.server import free_port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _pacs_demo(
    primary: Path, lesion: tuple[float, float], clinical: dict[str, Any], grpc_port: int, work: Path
) -> Any:
    """The study through a real Orthanc: C-STORE in with a marks SR, the gateway, the SR back.

    Returns the running :class:`aln.pacs.orthanc.OrthancNode` (the caller stops it), so the
    result can be looked at in Orthanc's web interface while the demo serves.
    """
    import pydicom
    import requests
    from dicomweb_client.api import DICOMwebClient

    from aln.client import AlnClient
    from aln.commands.pacs import PASSWORD_ENV
    from aln.pacs.dimse import store
    from aln.pacs.gateway import Gateway
    from aln.pacs.orthanc import OrthancNode
    from aln.pacs.records import FolderRecords
    from aln.synthetic.marks import DrawnMark, marks_report

    print("[PACS] starting Orthanc (loopback, DICOMweb, authentication on) ...", flush=True)
    node = OrthancNode().start()
    try:
        image = pydicom.dcmread(primary)
        marks = marks_report([image], [DrawnMark(image, "POINT", [lesion], "primary lesion")])
        store([image, marks], "127.0.0.1", node.dicom_port, node.aet)
        print(f"[PACS] study and the radiologist's marks SR sent by C-STORE to {node.aet}")
        records = work / "records"
        records.mkdir(parents=True, exist_ok=True)
        (records / f"{image.StudyInstanceUID}.json").write_text(json.dumps(clinical))
        session = requests.Session()
        session.auth = (node.username, node.password)
        with AlnClient(f"127.0.0.1:{grpc_port}") as client:
            gateway = Gateway(
                DICOMwebClient(node.dicomweb_url, session=session), client, FolderRecords(records)
            )
            result = gateway.predict_study(str(image.StudyInstanceUID))
    except BaseException:
        node.stop()
        raise
    print(
        f"[PACS] study {result.study_uid}: P = {result.prediction.probability:.4f} from the "
        f"radiologist's mark; result SR {result.sr_sop_instance_uid} stored beside it.\n"
        f"[PACS] see it in Orthanc's web interface: {node.explorer_url} "
        f"(user {node.username}, password {node.password}; loopback only, gone at exit)\n"
        f"[PACS] or watch for new studies: {PASSWORD_ENV}={node.password} aln pacs watch "
        f"--pacs {node.dicomweb_url} --pacs-user {node.username} --orthanc {node.url} "
        f"--records {records} --cursor {work / 'watch' / 'cursor'} --url 127.0.0.1:{grpc_port}",
        flush=True,
    )
    return node


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    from aln.client import AlnClient, ImageInput
    from aln.commands.serving import print_prediction, serve_until_stopped, start_server
    from aln.export.repository import build_repository
    from aln.model.checkpoint import new_demo_checkpoint
    from aln.preprocessing import contract
    from aln.preprocessing.manifest import MANIFEST_FILE, read_manifest
    from aln.serving.server import ServerConfig
    from aln.synthetic.cohort import write_cohort
    from aln.training.cohort import MANIFEST_NAME, read_cohort

    work = args.workdir
    checkpoint = work / f"checkpoint-{args.backbone}-seed{args.seed}"
    repo = work / "model_repository"
    if not (checkpoint / MANIFEST_FILE).is_file():
        print(f"[1/4] writing demo checkpoint {checkpoint} (random init, no clinical validity)")
        new_demo_checkpoint(checkpoint, args.backbone, args.seed)
    manifest = read_manifest(checkpoint)
    served = repo / contract.PREPROCESS / "1" / MANIFEST_FILE
    if (
        not served.is_file()
        or read_manifest(served.parent).weights_sha256 != manifest.weights_sha256
    ):
        print(f"[2/4] exporting to ONNX (parity vs torch enforced) and building {repo}")
        build_repository(checkpoint, repo, {"engine_format": args.engine_format})
    study_dir = work / "study"
    if not (study_dir / MANIFEST_NAME).is_file():
        write_cohort(study_dir, 1, seed=args.seed, vendor="hologic", transfer_syntax="jpeg2000")
    case = read_cohort(study_dir / MANIFEST_NAME)[0]
    record = study_dir / "clinical_record.json"
    record.write_text(json.dumps(case.clinical, indent=2) + "\n")
    assert case.auxiliary is not None and case.auxiliary_region is not None  # written with one

    config = ServerConfig(
        repo,
        grpc_port=_port(args.grpc_port),
        http_port=_port(args.http_port),
        metrics_port=_port(args.metrics_port),
    )
    print("[3/4] starting tritonserver (nvidia-pytriton) ...", flush=True)
    server = start_server(config, log=work / "tritonserver.log")
    lesion = (case.region.centre_x, case.region.centre_y)
    orthanc = None
    try:
        print(f"[4/4] sending synthetic study {case.primary} (no clinical content)")
        primary = ImageInput(case.primary, lesion)
        aux = case.auxiliary_region
        auxiliary = ImageInput(case.auxiliary, (aux.centre_x, aux.centre_y), aux.bbox)
        with AlnClient(f"127.0.0.1:{config.grpc_port}") as client:
            prediction = client.predict(primary, case.clinical, auxiliary=auxiliary)
        print_prediction(prediction, as_json=False)
        print("DEMO WEIGHTS: this number has no clinical validity.")
        if args.pacs:
            orthanc = _pacs_demo(case.primary, lesion, case.clinical, config.grpc_port, work)
        if args.once:
            server.stop()
            return 0
        print(
            f"serving until Ctrl-C (server log: {work / 'tritonserver.log'}); try:\n"
            f"  aln predict {case.primary} --lesion {lesion[0]} {lesion[1]} "
            f"--clinical {record} --url 127.0.0.1:{config.grpc_port}",
            flush=True,
        )
        return serve_until_stopped(server)
    except BaseException:
        server.stop()
        raise
    finally:
        if orthanc is not None:
            orthanc.stop()
