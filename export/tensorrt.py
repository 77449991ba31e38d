"""TensorRT plans from the exported ONNX graphs (GPU machines with TensorRT only).

Each plan is built with the TensorRT Python API with one optimisation profile (batch min 1,
opt 8, max ``max_batch``) and written with a JSON sidecar recording the TensorRT version and GPU
name. A plan only loads in the TensorRT release (and on the GPU architecture) that built it, so
``aln.serving.tensorrt.check_plan_compatible`` refuses a mismatch with a clear message, at
``aln build-repo`` and when the engine model loads, instead of letting TensorRT fail.

Precision: fp16 pins Softmax, LayerNorm and the normalisation reductions of Swin attention to
fp32 (``OBEY_PRECISION_CONSTRAINTS``), which keeps the probability within 1e-2 of ONNX Runtime
(the documented fp16 tolerance); int8 calibrates on real crops with the entropy calibrator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.model.errors import ModelError
from aln.preprocessing.manifest import Manifest
from aln.serving.tensorrt import build_environment

FP16_PROBABILITY_TOLERANCE = 1e-2
"""Largest probability difference of fp16 plans against ONNX Runtime fp32 (GPU test)."""
INT8_PROBABILITY_TOLERANCE = 5e-2
"""Largest probability difference of int8 plans (entropy-calibrated on served crops) against
ONNX Runtime fp32 on 64 crops of a model trained on the synthetic cohort (GPU test)."""
_FP32_PINNED_LAYER_TYPES = ("SOFTMAX", "NORMALIZATION", "REDUCE")


def build_plans(
    graphs: list[Path],
    manifest: Manifest,
    precision: str,
    max_batch: int,
    calibration: Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, object] | None]:
    """Build a plan beside each ONNX graph; int8 calibrates first on served-preprocessing crops.

    The backbones calibrate on the crops; the fusion head, a few thousand multiply-adds on
    embeddings, stays fp16 (calibrating it would need embeddings, not images).

    Returns:
        Each plan's record and, for int8, what the calibration used.

    Raises:
        TensorRTUnavailableError: No TensorRT or GPU.
        CalibrationError: Unusable calibration input (naming the manifest line).
    """
    from aln.export.calibration import calibration_set

    build_environment()  # fail before any crop is made when there is no TensorRT or GPU
    crops = None
    described = None
    if precision == "int8":
        chosen = calibration_set(calibration, manifest)
        crops, described = chosen.crops, chosen.describe()
    records = []
    for graph in graphs:
        image_input = graph.stem.startswith("backbone")
        records.append(
            build_plan(
                graph,
                graph.with_suffix(".plan"),
                precision if image_input or precision != "int8" else "fp16",
                max_batch,
                crops if image_input else None,
            )
        )
    return records, described


def build_plan(
    onnx_path: Path,
    plan: Path,
    precision: str,
    max_batch: int,
    calibration: npt.NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """Build one plan from an ONNX graph and write its sidecar.

    Args:
        onnx_path: The ONNX graph.
        plan: Output ``.plan`` path.
        precision: ``fp32``, ``fp16`` or ``int8``.
        max_batch: Largest batch of the optimisation profile.
        calibration: float32 (N, 3, 256, 256) crops for int8 calibration.

    Raises:
        TensorRTUnavailableError: No TensorRT or GPU.
        ModelError: The ONNX graph does not parse or the build fails.
    """
    environment = build_environment()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *rest), (min(8, max_batch), *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if any(kind in str(layer.type) for kind in _FP32_PINNED_LAYER_TYPES):
                layer.precision = trt.float32
    if precision == "int8":
        if calibration is None:
            raise ModelError(
                f"A precision of 'int8' needs calibration crops to build {plan.name}, and none "
                "were given (--calibration MANIFEST_OR_FOLDER)"
            )
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(trt, calibration, plan.with_suffix(".calib"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT failed to build a plan from {onnx_path}")
    plan.write_bytes(bytes(serialized))
    record = {
        "build_environment": environment.__dict__,
        "precision": precision,
        "max_batch": max_batch,
        "onnx": onnx_path.name,
        "calibration_cache": plan.with_suffix(".calib").name if precision == "int8" else None,
    }
    plan.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _calibrator(trt: Any, crops: npt.NDArray[np.float32], cache: Path) -> Any:
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.batches = [crops[i : i + 8] for i in range(0, len(crops), 8)]
            self.device = torch.empty(0, device="cuda")

        def get_batch_size(self) -> int:
            return 8

        def get_batch(self, names: list[str]) -> list[int] | None:
            if not self.batches:
                return None
            self.device = torch.from_numpy(np.ascontiguousarray(self.batches.pop(0))).cuda()
            return [int(self.device.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data: bytes) -> None:
            cache.write_bytes(bytes(data))

    return EntropyCalibrator()
