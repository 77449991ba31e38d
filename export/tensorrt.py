"""TensorRT plans from the exported ONNX graphs (GPU machines with TensorRT only).

Each plan is built with the TensorRT Python API with one optimisation profile (batch min 1,
opt 8, max ``max_batch``) and written with a JSON sidecar recording the TensorRT version and GPU
name. A plan only loads in the TensorRT release (and on the GPU architecture) that built it, so
:func:`check_plan_compatible` refuses a mismatch with a clear message instead of letting Triton
fail at load time.

Precision: fp16 pins Softmax, LayerNorm and the normalisation reductions of Swin attention to
fp32 (``OBEY_PRECISION_CONSTRAINTS``), which keeps the probability within 1e-2 of ONNX Runtime
(the documented fp16 tolerance); int8 calibrates on real crops with the entropy calibrator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.errors import MissingComponentError
from aln.model.errors import ModelError

FP16_PROBABILITY_TOLERANCE = 1e-2
_FP32_PINNED_LAYER_TYPES = ("SOFTMAX", "NORMALIZATION", "REDUCE")


class TensorRTUnavailableError(MissingComponentError):
    """TensorRT or a CUDA GPU is not present on this machine (exit status 4, not bad input)."""


class PlanMismatchError(ModelError):
    """A plan built by another TensorRT release or on another GPU."""


@dataclass(frozen=True)
class BuildEnvironment:
    """Where a plan was built.

    Attributes:
        tensorrt_version: ``tensorrt.__version__``.
        gpu_name: CUDA device name.
        compute_capability: ``major.minor``.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str


def build_environment() -> BuildEnvironment:
    """Describe this machine's TensorRT and GPU.

    Raises:
        TensorRTUnavailableError: No TensorRT Python package or no CUDA GPU.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            "TensorRT is not installed here (no 'tensorrt' Python package); build plans on a GPU "
            "machine inside the NGC Triton container, or use --format onnx",
            "TensorRT",
        ) from exc
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "No CUDA GPU is visible (torch.cuda.is_available() is False); TensorRT plans must be "
            "built on the GPU that will run them",
            "CUDA GPU",
        )
    major, minor = torch.cuda.get_device_capability(0)
    return BuildEnvironment(trt.__version__, torch.cuda.get_device_name(0), f"{major}.{minor}")


def check_plan_compatible(plan: Path) -> BuildEnvironment:
    """Refuse a plan whose sidecar names another TensorRT release or GPU.

    Raises:
        PlanMismatchError: Missing sidecar, or TensorRT version / GPU differ from this machine.
        TensorRTUnavailableError: No TensorRT or GPU here.
    """
    sidecar = plan.with_suffix(".json")
    if not sidecar.is_file():
        raise PlanMismatchError(f"{plan} has no {sidecar.name} recording where it was built")
    built = BuildEnvironment(**json.loads(sidecar.read_text())["build_environment"])
    here = build_environment()
    if built.tensorrt_version != here.tensorrt_version:
        raise PlanMismatchError(
            f"{plan} was built with TensorRT {built.tensorrt_version}, this machine has "
            f"{here.tensorrt_version}; rebuild it with `aln export --format tensorrt`"
        )
    if built.compute_capability != here.compute_capability:
        raise PlanMismatchError(
            f"{plan} was built on {built.gpu_name} (sm {built.compute_capability}), this machine "
            f"has {here.gpu_name} (sm {here.compute_capability}); rebuild it here"
        )
    return built


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
