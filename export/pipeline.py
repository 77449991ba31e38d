"""``aln export``: checkpoint -> engines, with enforced parity (and fidelity) reports.

ONNX graphs always, plus OpenVINO IR, int8 ONNX or TensorRT plans; parity of the ONNX graphs
against torch, and for reduced precision the fidelity gate against the ONNX graphs.

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

from aln.export.calibration import DEFAULT_HELD_OUT
from aln.export.onnx_export import GRAPH_FILES, OPSET, export_onnx
from aln.export.parity import FP32_TOLERANCE, check_parity
from aln.model.atomic import staged_directory
from aln.model.checkpoint import load_checkpoint
from aln.model.errors import ModelError
from aln.preprocessing.manifest import MANIFEST_FILE, Manifest
from aln.serving.cpu import CpuCapabilities, UnsupportedPrecisionError, check_precision
from aln.serving.spec import (
    ENGINE_FORMATS,
    ENGINE_PRECISIONS,
    check_engine_precision,
    model_precision,
)

REPORT_FILE = "export_report.json"
FORMATS = ENGINE_FORMATS
PRECISIONS = tuple(dict.fromkeys(p for ps in ENGINE_PRECISIONS.values() for p in ps))


class ParityError(ModelError):
    """An exported graph differs from torch by more than its tolerance."""


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    fmt: str = "onnx",
    precision: str = "fp32",
    max_batch: int = 64,
    calibration: Path | None = None,
    *,
    force_precision: bool = False,
    held_out: int = DEFAULT_HELD_OUT,
) -> dict[str, Any]:
    """Export a checkpoint and enforce parity (and fidelity); returns the report (also written).

    The fp32 ONNX graphs are always written: they are the reference every other engine is
    checked against. ``openvino`` adds an IR per graph; ``onnx`` int8 adds a quantised graph per
    backbone; ``tensorrt`` a plan per graph. A reduced-precision CPU export (int8, bf16) passes
    the fidelity gate (:mod:`aln.export.fidelity`) on held-out studies before anything is
    written. ``export_report.json`` names each model's served engine file under ``engines``.

    Args:
        checkpoint: The checkpoint folder.
        out: The export folder (written atomically).
        fmt: ``onnx``, ``openvino`` or ``tensorrt`` (:data:`ENGINE_PRECISIONS` says which
            precisions each takes).
        precision: ``fp32`` (the default and the reference), ``int8``, ``bf16`` (OpenVINO),
            ``fp16`` (TensorRT).
        max_batch: Largest batch of a TensorRT plan's profile.
        calibration: Where calibration crops and the gate's held-out studies come from
            (:mod:`aln.export.calibration`: a cohort manifest or a folder holding one; None for
            synthetic studies, said in the report). Crops are made by the served preprocessing.
        force_precision: Export bf16 on a CPU without native bf16 (the gate then measures fp32).
        held_out: Held-out crops of the fidelity gate (at least 256 unless a test asks for less).

    Raises:
        CheckpointError: The checkpoint is missing a file, fails its digest or its manifest.
        ParityError: A graph is outside tolerance (nothing is written).
        FidelityError: A reduced-precision engine misses a bound (nothing is written).
        CalibrationError: Unusable calibration input (naming the manifest line).
        TensorRTUnavailableError: ``fmt="tensorrt"`` without TensorRT or a GPU.
        ModelError: Invalid format/precision combination, or bf16 on a CPU without it.
    """
    try:
        check_engine_precision(fmt, precision)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    if max_batch < 1:
        raise ModelError(f"A max batch of {max_batch} is invalid, it must be at least 1")
    if fmt == "tensorrt":
        from aln.serving.tensorrt import build_environment

        build_environment()  # fail before any work when there is no TensorRT or GPU
    elif precision != "fp32":
        try:
            check_precision(precision, force=force_precision)
        except UnsupportedPrecisionError as exc:
            raise ModelError(str(exc)) from None

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
            "force_precision": force_precision,
            "max_batch": max_batch,
            "opset": OPSET,
            "exporter": "torch.onnx TorchScript (dynamo=False)",
            "cpu": CpuCapabilities.detect().describe(),
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
            "engines": {g.model: g.path.name for g in graphs},
        }
        if fmt == "tensorrt":
            from aln.export.tensorrt import build_plans

            report["plans"], report["calibration"] = build_plans(
                [g.path for g in graphs], manifest, precision, max_batch, calibration
            )
            report["engines"] = {g.model: g.path.with_suffix(".plan").name for g in graphs}
        elif fmt == "openvino" or precision != "fp32":
            report.update(
                _cpu_engines(
                    staging, manifest, fmt, precision, calibration, force_precision, held_out
                )
            )
        report["seconds"] = round(time.perf_counter() - start, 2)
        shutil.copy2(Path(checkpoint) / MANIFEST_FILE, staging / MANIFEST_FILE)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _cpu_engines(
    staging: Path,
    manifest: Manifest,
    fmt: str,
    precision: str,
    calibration: Path | None,
    force_precision: bool,
    held_out: int,
) -> dict[str, Any]:
    """OpenVINO IR or int8 ONNX engines beside the fp32 graphs, gated on held-out studies.

    Raises:
        FidelityError: A bound is missed (the caller's staging folder is then discarded).
    """
    from aln.export.calibration import calibration_set
    from aln.export.fidelity import FidelityError, check_fidelity
    from aln.export.quantize import INT8_SUFFIX, onnx_int8, openvino_ir
    from aln.serving.engine import Engine, OnnxEngine
    from aln.serving.openvino import OpenVinoEngine
    from aln.serving.spec import EngineSettings

    # only reduced precision needs crops: int8 calibrates on them, every gate holds some out
    chosen = (
        calibration_set(calibration, manifest, held_out=held_out) if precision != "fp32" else None
    )
    transformer = manifest.backbone.startswith("swin")
    engines: dict[str, str] = {}
    candidate: dict[str, Engine] = {}
    seconds: dict[str, float] = {}
    for model, name in GRAPH_FILES.items():
        graph = staging / name
        started = time.perf_counter()
        settings = EngineSettings(
            threads=2, precision=model_precision(model, precision), force_precision=force_precision
        )
        crops = chosen.crops if chosen is not None and settings.precision == "int8" else None
        if fmt == "openvino":
            xml = openvino_ir(
                graph,
                graph.with_suffix(".xml"),
                settings.precision,
                crops,
                transformer,
            )
            engines[model] = xml.name
            candidate[model] = OpenVinoEngine(xml, settings)
        else:
            path = graph
            if crops is not None:
                path = onnx_int8(graph, graph.with_name(graph.stem + INT8_SUFFIX), crops)
            engines[model] = path.name
            candidate[model] = OnnxEngine(path, settings)
        seconds[model] = round(time.perf_counter() - started, 2)
    described: dict[str, Any] = {
        "engines": engines,
        "engine_seconds": seconds,
        "calibration": chosen.describe() if chosen is not None and precision == "int8" else None,
    }
    if chosen is not None:
        reference = {
            m: OnnxEngine(staging / n, EngineSettings(threads=2)) for m, n in GRAPH_FILES.items()
        }
        fidelity = check_fidelity(reference, candidate, chosen.held_out, manifest.auxiliary)
        if not fidelity.passed:
            raise FidelityError(
                f"The {fmt} {precision} engines miss the fidelity gate on "
                f"{fidelity.studies} held-out studies ({fidelity.crops} crops): "
                + "; ".join(fidelity.failures)
                + ". Nothing was written",
                fidelity,
            )
        described["fidelity"] = fidelity.as_dict()
    return described


def graph_paths(export_dir: Path) -> dict[str, Path]:
    """The fp32 ONNX graph of each composing model in an export folder (the reference)."""
    return {model: Path(export_dir) / name for model, name in GRAPH_FILES.items()}


def engine_paths(export_dir: Path) -> dict[str, Path]:
    """The served engine file of each composing model in an export folder (from its report).

    Reports written before engines were recorded name the fp32 ONNX graphs.
    """
    report = json.loads((Path(export_dir) / REPORT_FILE).read_text())
    engines = report.get("engines") or GRAPH_FILES
    return {model: Path(export_dir) / name for model, name in engines.items()}
