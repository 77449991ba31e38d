"""``aln export``: checkpoint -> ONNX graphs (+ TensorRT plans) + an enforced parity report.

Everything is written into a temporary sibling folder and moved into place only when export and
parity have passed, so a failure leaves nothing half-written in the output folder.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aln.export.onnx_export import GRAPH_FILES, OPSET, export_onnx
from aln.export.parity import FP32_TOLERANCE, check_parity
from aln.model.atomic import staged_directory
from aln.model.checkpoint import load_checkpoint
from aln.model.errors import ModelError
from aln.preprocessing.manifest import MANIFEST_FILE

REPORT_FILE = "export_report.json"
FORMATS = ("onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


class ParityError(ModelError):
    """An exported graph differs from torch by more than its tolerance."""


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    fmt: str = "onnx",
    precision: str = "fp32",
    max_batch: int = 64,
    calibration: Path | None = None,
) -> dict[str, Any]:
    """Export a checkpoint and enforce parity; returns the report (also written as JSON).

    Args:
        checkpoint: The checkpoint folder.
        out: The export folder (written atomically).
        fmt: ``onnx`` or ``tensorrt``.
        precision: ``fp32``; ``fp16`` or ``int8`` for TensorRT.
        max_batch: Largest batch of a TensorRT plan's profile.
        calibration: Where int8 calibration crops come from (:mod:`aln.export.calibration`: a
            cohort manifest or a folder holding one; None for synthetic studies, said in the
            report). Crops are made by the served preprocessing.

    Raises:
        CheckpointError: The checkpoint is missing a file, fails its digest or its manifest.
        ParityError: A graph is outside tolerance (nothing is written).
        TensorRTUnavailableError: ``fmt="tensorrt"`` without TensorRT or a GPU.
        ModelError: Invalid format/precision combination.
    """
    if fmt not in FORMATS:
        raise ModelError(f"A format of '{fmt}' is invalid, it must be one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ModelError(
            f"A precision of '{precision}' is invalid, it must be one of {', '.join(PRECISIONS)}"
        )
    if fmt == "onnx" and precision != "fp32":
        raise ModelError(
            f"ONNX graphs are exported in fp32; precision '{precision}' is a TensorRT build "
            "option (--format tensorrt)"
        )
    if max_batch < 1:
        raise ModelError(f"A max batch of {max_batch} is invalid, it must be at least 1")
    if fmt == "tensorrt":
        from aln.serving.tensorrt import build_environment

        build_environment()  # fail before any work when there is no TensorRT or GPU

    net, manifest = load_checkpoint(checkpoint)
    out = Path(out)
    with staged_directory(out) as staging:
        start = time.perf_counter()
        graphs = export_onnx(net, staging)
        parity = check_parity(net, {g.model: g.path for g in graphs})
        failed = [p for p in parity if not p.passed]
        if failed:
            worst = max(failed, key=lambda p: p.max_abs_diff)
            raise ParityError(
                f"ONNX Runtime differs from torch on {worst.model}.{worst.output} at batch "
                f"{worst.batch}: max abs diff {worst.max_abs_diff:.2e} > {worst.tolerance:.0e}"
            )
        report: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "model_name": manifest.model_name,
            "model_version": manifest.model_version,
            "weights_sha256": manifest.weights_sha256,
            "backbone": manifest.backbone,
            "format": fmt,
            "precision": precision,
            "max_batch": max_batch,
            "opset": OPSET,
            "exporter": "torch.onnx TorchScript (dynamo=False)",
            "graphs": [
                {
                    "model": g.model,
                    "file": g.path.name,
                    "seconds": round(g.seconds, 2),
                    "size_mb": round(g.size_mb, 1),
                }
                for g in graphs
            ],
            "parity": {
                "tolerance": FP32_TOLERANCE,
                "passed": True,
                "results": [asdict(p) for p in parity],
            },
        }
        if fmt == "tensorrt":
            from aln.export.tensorrt import build_plans

            report["plans"], report["calibration"] = build_plans(
                [g.path for g in graphs], manifest, precision, max_batch, calibration
            )
        report["seconds"] = round(time.perf_counter() - start, 2)
        shutil.copy2(Path(checkpoint) / MANIFEST_FILE, staging / MANIFEST_FILE)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def graph_paths(export_dir: Path) -> dict[str, Path]:
    """The ONNX graph of each composing model in an export folder."""
    return {model: Path(export_dir) / name for model, name in GRAPH_FILES.items()}
