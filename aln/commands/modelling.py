"""``aln init-demo`` and ``aln export``: checkpoints and engines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from aln.export.calibration import DEFAULT_HELD_OUT
from aln.model.backbones import BACKBONES, DEFAULT_BACKBONE
from aln.serving.spec import ENGINE_FORMATS, ENGINE_PRECISIONS


def register(commands: Any) -> None:
    """Add the model subcommands to the ``aln`` parser."""
    demo = commands.add_parser(
        "init-demo",
        help="write a seeded demo checkpoint (no clinical validity)",
        description="Write a seeded checkpoint (random init, or backbones from a local "
        "pretrained file). It has no clinical validity.",
    )
    demo.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    demo.add_argument("--backbone", choices=tuple(BACKBONES), default=DEFAULT_BACKBONE)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--init-weights",
        type=Path,
        help="local timm-format or original Swin V2 weights for both backbones",
    )
    demo.set_defaults(handler=run_init_demo)

    export = commands.add_parser(
        "export",
        help="export a checkpoint to ONNX, OpenVINO or TensorRT engines and enforce parity",
        description="Export the two backbones and the fusion head; check ONNX Runtime against "
        "torch at batch 1 and 8 (max abs diff <= 1e-4) and write export_report.json.",
    )
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument(
        "--format",
        choices=ENGINE_FORMATS,
        default="onnx",
        help="onnx (fp32 or int8 QDQ), openvino (IR: fp32, bf16, int8) or tensorrt (GPU)",
    )
    export.add_argument(
        "--precision",
        choices=tuple(dict.fromkeys(p for ps in ENGINE_PRECISIONS.values() for p in ps)),
        default="fp32",
        help="fp32 (the reference); int8 and bf16 pass the fidelity gate on held-out studies",
    )
    export.add_argument("--max-batch", type=int, default=64)
    export.add_argument(
        "--calibration",
        type=Path,
        metavar="MANIFEST_OR_FOLDER",
        help="int8 calibration and the fidelity gate's held-out studies (a cohort manifest, or "
        "a folder holding manifest.csv); crops are made by the served preprocessing. Default: "
        "synthetic studies",
    )
    export.add_argument(
        "--held-out",
        type=int,
        default=DEFAULT_HELD_OUT,
        metavar="CROPS",
        help=f"held-out crops of the fidelity gate (default {DEFAULT_HELD_OUT})",
    )
    export.add_argument(
        "--force-precision",
        action="store_true",
        help="export bf16 on a CPU without native bf16 (the gate then measures fp32)",
    )
    export.add_argument("--json", action="store_true", help="print the report as JSON")
    export.set_defaults(handler=run_export)


def run_init_demo(args: argparse.Namespace) -> int:
    """Write the demo checkpoint."""
    from aln.model.checkpoint import new_demo_checkpoint

    manifest = new_demo_checkpoint(
        args.out, args.backbone, args.seed, init_weights=args.init_weights
    )
    print(
        f"wrote {args.out}: {manifest.model_name} {manifest.model_version} "
        f"(sha256 {manifest.weights_sha256[:12]}...)"
    )
    init = manifest.training.get("init_weights")
    if init:
        print(
            f"backbones initialised from {init['path']}: {init['loaded']} tensors, "
            f"{len(init['discarded_classifier'])} classifier keys discarded, "
            f"{len(init['unexpected'])} unexpected keys ignored"
            f"{', remapped from the original Swin V2 layout' if init['remapped'] else ''}"
        )
    print("This checkpoint has NO clinical validity: " + manifest.training["clinical_validity"])
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export and print the parity summary."""
    from aln.export.pipeline import export_checkpoint

    report = export_checkpoint(
        args.checkpoint,
        args.out,
        args.format,
        args.precision,
        args.max_batch,
        args.calibration,
        force_precision=args.force_precision,
        held_out=args.held_out,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for graph in report["graphs"]:
        print(
            f"{graph['model']:>20}: {graph['file']} {graph['size_mb']} MB in {graph['seconds']} s"
        )
    worst = max(report["parity"]["results"], key=lambda p: p["max_abs_diff"])
    print(
        f"parity vs torch (batch 1 and 8): passed, worst {worst['model']}.{worst['output']} "
        f"max abs diff {worst['max_abs_diff']:.2e} <= {report['parity']['tolerance']:.0e}"
    )
    fidelity = report.get("fidelity")
    if fidelity:
        auc = (
            f", AUC {fidelity['auc_reference']} -> {fidelity['auc_candidate']} on "
            f"{fidelity['auc_studies']} labelled studies"
            if fidelity["auc_studies"]
            else ", no labelled studies for the AUC"
        )
        print(
            f"fidelity vs fp32 on {fidelity['studies']} held-out studies ({fidelity['crops']} "
            f"crops): passed, probability max abs diff {fidelity['probability_max_abs_diff']} "
            f"mean {fidelity['probability_mean_abs_diff']}{auc}, Spearman {fidelity['spearman']}"
        )
    if report.get("calibration", {}) and report["calibration"].get("synthetic"):
        print("calibrated on SYNTHETIC studies: pass --calibration with the site's studies")
    print(f"engines: {', '.join(report['engines'].values())}")
    print(f"wrote {args.out}/export_report.json")
    return 0
