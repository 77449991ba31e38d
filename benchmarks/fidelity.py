"""The fidelity gate of every reduced-precision CPU engine on one trained checkpoint, in one run.

``aln bench fidelity --checkpoint CKPT --calibration COHORT [--engines onnx/int8,openvino/int8]``
exports each engine option as ``aln export`` does (calibration crops and held-out studies from the
same cohort, never overlapping) and records what the gate measured, passed or not: an export that
misses a bound writes no engines, and this result keeps the figures that made it miss. bf16 on a
CPU without native bf16 is recorded as refused with the reason. Judge reduced precision on a
trained checkpoint: demo random weights put every probability near 0.5.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aln.benchmarks.machine import describe_machine, versions, write_result
from aln.export.calibration import DEFAULT_HELD_OUT

DEFAULT_ENGINES = "onnx/int8,openvino/int8,openvino/bf16"


def run(
    checkpoint: Path,
    calibration: Path | None,
    engines: list[str],
    held_out: int = DEFAULT_HELD_OUT,
    log: Any = None,
) -> dict[str, Any]:
    """Gate each ``format/precision`` and return the result document."""
    from aln.export.fidelity import FidelityError
    from aln.export.pipeline import export_checkpoint
    from aln.model.errors import ModelError
    from aln.preprocessing.manifest import read_manifest

    manifest = read_manifest(checkpoint)
    rows: dict[str, Any] = {}
    for label in engines:
        fmt, precision = label.split("/")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            try:
                report = export_checkpoint(
                    checkpoint,
                    Path(scratch) / "export",
                    fmt,
                    precision,
                    calibration=calibration,
                    held_out=held_out,
                )
                row: dict[str, Any] = {
                    "outcome": "passed",
                    "fidelity": report["fidelity"],
                    "calibration": report["calibration"],
                }
            except FidelityError as exc:
                row = {"outcome": "failed", "fidelity": exc.report.as_dict(), "error": str(exc)}
            except ModelError as exc:  # refused before any work (bf16 without native bf16)
                row = {"outcome": "refused", "error": str(exc)}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[label] = row
        if log is not None:
            log(f"{label}: {row['outcome']} in {row['seconds']} s")
    return {
        "benchmark": "fidelity",
        "machine": describe_machine(),
        "versions": versions(),
        "checkpoint": {
            "path": str(checkpoint),
            "backbone": manifest.backbone,
            "auxiliary": manifest.auxiliary,
            "training": {
                k: manifest.training.get(k) for k in ("status", "best_epoch", "best_val_auc")
            },
        },
        "calibration_source": str(calibration) if calibration else "synthetic",
        "held_out_crops": held_out,
        "engines": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained checkpoint")
    parser.add_argument(
        "--calibration",
        type=Path,
        help="cohort manifest or folder (calibration and held-out studies; default synthetic)",
    )
    parser.add_argument(
        "--engines", default=DEFAULT_ENGINES, help="comma-separated format/precision"
    )
    parser.add_argument("--held-out", type=int, default=DEFAULT_HELD_OUT)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(args.checkpoint, args.calibration, args.engines.split(","), args.held_out, print)
    out = write_result(report, "fidelity", args.out)
    for label, row in report["engines"].items():
        gate = row.get("fidelity")
        if gate:
            print(
                f"{label}: {row['outcome']}: probability max {gate['probability_max_abs_diff']} "
                f"mean {gate['probability_mean_abs_diff']}, AUC {gate['auc_reference']} -> "
                f"{gate['auc_candidate']}, Spearman {gate['spearman']}"
            )
        else:
            print(f"{label}: {row['outcome']}: {row['error']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
