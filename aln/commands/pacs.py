"""``aln pacs``: the gateway between a PACS (DICOMweb) and the served ensemble."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from aln.commands import UsageError

PASSWORD_ENV = "ALN_PACS_PASSWORD"
"""The environment variable holding the PACS password (never a command-line argument)."""


def register(commands: Any) -> None:
    """Add ``aln pacs``."""
    pacs = commands.add_parser(
        "pacs",
        help="predict studies that live in a PACS and write the result SR beside them",
        description="Talk to a PACS over DICOMweb (QIDO-RS, WADO-RS, STOW-RS): lesion marks "
        "from the study's TID 1500 SR, clinical record from --records, the prediction through "
        "the Triton ensemble, the result as a DICOM SR stored with the study.",
    )
    actions = pacs.add_subparsers(dest="action", required=True, metavar="ACTION")
    predict = actions.add_parser("predict", help="predict one study")
    predict.add_argument("--study", required=True, help="Study Instance UID")
    predict.add_argument(
        "--pacs", required=True, help="DICOMweb base URL (Orthanc: http://HOST:8042/dicom-web)"
    )
    predict.add_argument("--pacs-user", help=f"HTTP user (password in ${PASSWORD_ENV})")
    predict.add_argument("--records", type=Path, required=True, help="folder of clinical records")
    predict.add_argument("--url", default="localhost:8001", help="Triton gRPC host:port")
    predict.add_argument("--timeout-s", type=float, default=60.0)
    predict.add_argument(
        "--lesion", type=float, nargs=2, metavar=("X", "Y"), help="one-off lesion centre"
    )
    predict.add_argument("--instance", help="the SOP Instance UID --lesion is on")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Predict one study of the PACS and store its SR."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    from aln.client import AlnClient
    from aln.pacs.gateway import Gateway
    from aln.pacs.marks import Mark
    from aln.pacs.records import FolderRecords

    if (args.lesion is None) != (args.instance is None):
        raise UsageError("--lesion X Y and --instance SOP_UID go together")
    session = requests.Session()
    if args.pacs_user:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise UsageError(f"--pacs-user needs the password in the environment: ${PASSWORD_ENV}")
        session.auth = (args.pacs_user, password)
    lesion = None
    if args.lesion is not None:
        lesion = Mark(args.instance, tuple(args.lesion), None, "POINT", "--lesion")
    with AlnClient(args.url, timeout_s=args.timeout_s) as client:
        gateway = Gateway(
            DICOMwebClient(url=args.pacs, session=session), client, FolderRecords(args.records)
        )
        result = gateway.predict_study(args.study, lesion)
    answer = {
        "study": result.study_uid,
        "probability": result.prediction.probability,
        "decision": result.prediction.decision.value,
        "sr_sop_instance_uid": result.sr_sop_instance_uid,
        "written": result.written,
    }
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        what = "stored" if result.written else "already in the PACS, not stored again"
        print(
            f"study {result.study_uid}: P = {result.prediction.probability:.4f}, "
            f"{result.prediction.decision.value}; SR {result.sr_sop_instance_uid} {what}"
        )
    return 0
