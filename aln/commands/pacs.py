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
    _connection_arguments(predict)
    predict.add_argument(
        "--lesion", type=float, nargs=2, metavar=("X", "Y"), help="one-off lesion centre"
    )
    predict.add_argument("--instance", help="the SOP Instance UID --lesion is on")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(handler=run_predict)

    watch = actions.add_parser(
        "watch", help="predict every study that becomes stable in Orthanc (/changes), once"
    )
    _connection_arguments(watch)
    watch.add_argument("--orthanc", required=True, help="Orthanc REST base URL (its /changes)")
    watch.add_argument(
        "--cursor", type=Path, required=True, help="file keeping the last handled change"
    )
    watch.add_argument(
        "--status", type=Path, help="status file (default: beside --cursor, named status.jsonl)"
    )
    watch.add_argument("--poll-s", type=float, default=2.0, help="seconds between passes")
    watch.add_argument(
        "--max-backoff-s",
        type=float,
        default=60.0,
        help="longest wait while the server or the PACS cannot be reached (doubling from --poll-s)",
    )
    watch.add_argument("--once", action="store_true", help="handle what is there, then exit")
    watch.set_defaults(handler=run_watch)

    status = actions.add_parser("status", help="list the watched studies: done, failed, pending")
    status.add_argument("--status", type=Path, required=True, help="the watch's status file")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=run_status)


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pacs", required=True, help="DICOMweb base URL (Orthanc: http://HOST:8042/dicom-web)"
    )
    parser.add_argument("--pacs-user", help=f"HTTP user (password in ${PASSWORD_ENV})")
    parser.add_argument("--records", type=Path, required=True, help="folder of clinical records")
    parser.add_argument("--url", default="localhost:8001", help="Triton gRPC host:port")
    parser.add_argument("--timeout-s", type=float, default=60.0)


def _session(args: argparse.Namespace) -> Any:
    import requests

    session = requests.Session()
    if args.pacs_user:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise UsageError(f"--pacs-user needs the password in the environment: ${PASSWORD_ENV}")
        session.auth = (args.pacs_user, password)
    return session


def _gateway(args: argparse.Namespace, session: Any, client: Any) -> Any:
    from dicomweb_client.api import DICOMwebClient

    from aln.pacs.gateway import Gateway
    from aln.pacs.records import FolderRecords

    dicomweb = DICOMwebClient(url=args.pacs, session=session)
    return Gateway(dicomweb, client, FolderRecords(args.records))


def run_watch(args: argparse.Namespace) -> int:
    """Watch Orthanc's feed and predict each stable study once."""
    import logging

    from aln.client import AlnClient
    from aln.pacs.watch import Cursor, OrthancChanges, StatusFile, Watcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    session = _session(args)
    changes = OrthancChanges(args.orthanc, session)
    cursor = Cursor(args.cursor)
    status = StatusFile(args.status or args.cursor.parent / "status.jsonl")
    with AlnClient(args.url, timeout_s=args.timeout_s) as client:
        watcher = Watcher(_gateway(args, session, client), changes, cursor, status)
        if args.once:
            for done in watcher.run_pass():
                if done.result is not None:
                    what = "stored" if done.result.written else "already stored"
                    outcome = f"P = {done.result.prediction.probability:.4f}, {what}"
                elif done.unchanged_since:
                    outcome = f"unchanged since SR {done.unchanged_since}"
                else:
                    outcome = f"refused: {done.refusal}"
                print(f"change {done.sequence}: study {done.study_uid}: {outcome}")
            return 0
        watcher.run(args.poll_s, args.max_backoff_s)
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the last outcome of each watched study."""
    from aln.pacs.watch import StatusFile

    latest = StatusFile(args.status).latest()
    if args.json:
        print(json.dumps(latest, indent=2))
        return 0
    for study, line in sorted(latest.items(), key=lambda item: item[1]["sequence"]):
        print(f"{line['outcome']:>8}  {study}  {line['time']}  {line['detail']}")
    counts = {
        o: sum(v["outcome"] == o for v in latest.values()) for o in ("done", "failed", "pending")
    }
    print(", ".join(f"{n} {o}" for o, n in counts.items()))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Predict one study of the PACS and store its SR."""
    from aln.client import AlnClient
    from aln.pacs.marks import Mark

    if (args.lesion is None) != (args.instance is None):
        raise UsageError("--lesion X Y and --instance SOP_UID go together")
    session = _session(args)
    lesion = None
    if args.lesion is not None:
        lesion = Mark(args.instance, tuple(args.lesion), None, "POINT", "--lesion")
    with AlnClient(args.url, timeout_s=args.timeout_s) as client:
        result = _gateway(args, session, client).predict_study(args.study, lesion)
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
