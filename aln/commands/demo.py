"""``aln demo``: the main job of ``make run``, end to end on a synthetic study.

Writes a seeded demo checkpoint, exports it to ONNX (parity enforced), builds the model
repository, starts the Triton server bundled in ``nvidia-pytriton``, sends a synthetic study
through the gRPC client, prints the prediction and its provenance, and keeps serving until
interrupted (``--once`` stops after the first answer). Steps whose outputs exist are reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
from pathlib import Path
from typing import Any

from aln.model.backbones import BACKBONES, DEFAULT_BACKBONE


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
    demo.add_argument("--grpc-port", type=int, default=8001)
    demo.add_argument("--http-port", type=int, default=8000)
    demo.add_argument("--metrics-port", type=int, default=8002)
    demo.set_defaults(handler=run_demo)


def _port(preferred: int) -> int:
    """``preferred`` when it is free on loopback, else any free port."""
    from aln.server import free_port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    from aln.client import AlnClient, ImageInput
    from aln.commands.serving import print_prediction, serve_until_stopped, start_server
    from aln.export.repository import MANIFEST_NAME, build_repository
    from aln.model.checkpoint import MANIFEST_FILE, new_demo_checkpoint, read_manifest
    from aln.preprocessing import contract
    from aln.preprocessing.synth import write_cohort
    from aln.server import ServerConfig

    work = args.workdir
    checkpoint = work / f"checkpoint-{args.backbone}-seed{args.seed}"
    repo = work / "model_repository"
    if not (checkpoint / MANIFEST_FILE).is_file():
        print(f"[1/4] writing demo checkpoint {checkpoint} (random init, no clinical validity)")
        new_demo_checkpoint(checkpoint, args.backbone, args.seed)
    manifest = read_manifest(checkpoint)
    served = repo / contract.PREPROCESS / "1" / MANIFEST_NAME
    if (
        not served.is_file()
        or json.loads(served.read_text())["weights_sha256"] != manifest.weights_sha256
    ):
        print(f"[2/4] exporting to ONNX (parity vs torch enforced) and building {repo}")
        build_repository(checkpoint, repo)
    study_dir = work / "study"
    if not (study_dir / "manifest.csv").is_file():
        write_cohort(study_dir, 1, seed=args.seed, vendor="hologic", transfer_syntax="jpeg2000")
    row = next(csv.DictReader((study_dir / "manifest.csv").open()))
    dicom = study_dir / row["file"]

    config = ServerConfig(
        repo,
        grpc_port=_port(args.grpc_port),
        http_port=_port(args.http_port),
        metrics_port=_port(args.metrics_port),
    )
    print("[3/4] starting tritonserver (nvidia-pytriton) ...", flush=True)
    server = start_server(config, log=work / "tritonserver.log")
    try:
        print(f"[4/4] sending synthetic study {dicom} (no clinical content)")
        primary = ImageInput(dicom, (float(row["lesion_x"]), float(row["lesion_y"])))
        auxiliary = ImageInput(
            dicom,
            (float(row["aux_x"]), float(row["aux_y"])),
            tuple(float(row[k]) for k in ("aux_x0", "aux_y0", "aux_x1", "aux_y1")),
        )  # type: ignore[arg-type]
        with AlnClient(f"127.0.0.1:{config.grpc_port}") as client:
            prediction = client.predict(primary, json.loads(row["clinical"]), auxiliary=auxiliary)
        print_prediction(prediction, as_json=False)
        print("DEMO WEIGHTS: this number has no clinical validity.")
    except BaseException:
        server.stop()
        raise
    if args.once:
        server.stop()
        return 0
    print(
        "serving until Ctrl-C (server log: "
        f"{work / 'tritonserver.log'}); try: aln predict {dicom} --lesion "
        f"{row['lesion_x']} {row['lesion_y']} --clinical RECORD.json "
        f"--url 127.0.0.1:{config.grpc_port}"
    )
    return serve_until_stopped(server)
