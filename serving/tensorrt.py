"""TensorRT at run time: what this machine has, whether a plan fits it, and running one.

A plan only loads in the TensorRT release, and on the GPU architecture, that built it. Every plan
``aln export --format tensorrt`` writes has a JSON sidecar recording where it was built;
:func:`check_plan_compatible` compares it with this machine and refuses a mismatch naming both
sides, at ``aln build-repo`` and again when the engine model loads, instead of letting TensorRT
fail with a deserialisation error. Building plans is :mod:`aln.export.tensorrt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aln.errors import MissingComponentError
from aln.serving.engine import Arrays, Engine
from aln.serving.errors import EngineLoadError
from aln.serving.spec import EngineSettings


class TensorRTUnavailableError(MissingComponentError):
    """TensorRT or a CUDA GPU is not present on this machine (exit status 4, not bad input)."""


class PlanMismatchError(EngineLoadError):
    """A plan without its sidecar, or built by another TensorRT release or on another GPU."""


@dataclass(frozen=True)
class BuildEnvironment:
    """Where a plan was built (or where one would run).

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


def check_plan_compatible(plan: Path, here: BuildEnvironment | None = None) -> BuildEnvironment:
    """Refuse a plan whose sidecar is missing or names another TensorRT release or GPU.

    Args:
        plan: The ``.plan`` file; its sidecar is the ``.json`` beside it.
        here: This machine (default: :func:`build_environment`).

    Returns:
        Where the plan was built.

    Raises:
        PlanMismatchError: Missing or unreadable sidecar, or TensorRT version / GPU architecture
            differ from this machine's.
        TensorRTUnavailableError: No TensorRT or GPU here.
    """
    sidecar = Path(plan).with_suffix(".json")
    if not sidecar.is_file():
        raise PlanMismatchError(f"{plan} has no {sidecar.name} recording where it was built")
    try:
        built = BuildEnvironment(**json.loads(sidecar.read_text())["build_environment"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PlanMismatchError(f"{sidecar} does not record a build environment: {exc}") from exc
    here = here or build_environment()
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


class TensorRtEngine(Engine):
    """A TensorRT plan on the GPU, batching like every :class:`~aln.serving.engine.Engine`.

    The sidecar is checked before the plan is deserialised. Inputs and outputs travel as torch
    CUDA tensors (TensorRT's own Python runtime has no allocator).

    Args:
        plan: The ``.plan`` file.
        settings: Zero-row skipping (threads and spinning do not apply to a GPU).

    Raises:
        PlanMismatchError: The plan was built elsewhere (:func:`check_plan_compatible`).
        TensorRTUnavailableError: No TensorRT or GPU here.
        EngineLoadError: TensorRT cannot deserialise the plan.
    """

    def __init__(self, plan: Path, settings: EngineSettings | None = None) -> None:
        check_plan_compatible(plan)
        self.settings = settings or EngineSettings()
        import tensorrt as trt
        import torch

        self._torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise EngineLoadError(f"TensorRT could not deserialise {plan}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self.output_widths = [
            tuple(int(d) for d in self.engine.get_tensor_shape(n))[1:] for n in self.output_names
        ]

    def infer(self, feeds: Arrays) -> Arrays:
        """Run one batch on the GPU; returns float32 numpy outputs."""
        torch = self._torch
        keep = []
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return {name: out.cpu().numpy() for name, out in outputs.items()}
