"""OpenVINO engines on the CPU: fp32, bf16 (the inference-precision hint) and int8 IR.

An IR written by ``aln export --format openvino`` holds its precision: int8 as NNCF's
FakeQuantize nodes, fp32 and bf16 as fp32 weights. bf16 is a runtime property of OpenVINO's CPU
plugin (``INFERENCE_PRECISION_HINT``), so the engine sets it from the precision the export
carries and, for every other precision, pins fp32 explicitly: on a CPU with AMX OpenVINO would
otherwise pick bf16 by itself and serve something the fidelity gate never checked.
"""

from __future__ import annotations

from pathlib import Path

from aln.errors import MissingComponentError
from aln.serving.cpu import UnsupportedPrecisionError, check_precision
from aln.serving.engine import Arrays, Engine
from aln.serving.errors import EngineLoadError
from aln.serving.spec import EngineSettings

INFERENCE_PRECISION = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}
"""The engine precision -> OpenVINO's ``INFERENCE_PRECISION_HINT`` for what is not int8."""


def openvino_core() -> object:
    """An ``openvino.Core``, or the error that says how to install OpenVINO.

    Raises:
        MissingComponentError: ``openvino`` is not installed.
    """
    try:
        import openvino as ov
    except ModuleNotFoundError as exc:
        raise MissingComponentError(
            "OpenVINO engines need the openvino package: pip install 'aln-triton[export]'",
            "openvino",
        ) from exc
    return ov.Core()


def compile_options(settings: EngineSettings) -> dict[str, object]:
    """The CPU plugin properties an engine compiles with (also used by the benchmarks)."""
    return {
        "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[settings.precision],
        "INFERENCE_NUM_THREADS": settings.threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        # the cores are shared with preprocessing and the other engine instances
        "ENABLE_CPU_PINNING": False,
    }


class OpenVinoEngine(Engine):
    """One OpenVINO IR (``.xml`` + ``.bin``) on the CPU plugin, one infer request per instance.

    Args:
        path: The ``.xml`` file (its ``.bin`` beside it).
        settings: Threads, precision and zero-row skipping (spinning is an ONNX Runtime option).

    Raises:
        EngineLoadError: The IR is missing or cannot be compiled, or its precision needs
            instructions this CPU lacks (bf16 without ``force_precision``).
        MissingComponentError: OpenVINO is not installed.
    """

    def __init__(self, path: Path, settings: EngineSettings | None = None) -> None:
        settings = settings or EngineSettings()
        path = Path(path)
        if not path.is_file() or not path.with_suffix(".bin").is_file():
            raise EngineLoadError(
                f"The OpenVINO engine '{path}' needs both {path.name} and "
                f"{path.with_suffix('.bin').name}, and one is missing"
            )
        try:
            check_precision(settings.precision, force=settings.force_precision)
        except UnsupportedPrecisionError as exc:
            raise EngineLoadError(f"The OpenVINO engine '{path}' is refused: {exc}") from exc
        core = openvino_core()
        try:
            self.compiled = core.compile_model(  # type: ignore[attr-defined]
                core.read_model(str(path)),  # type: ignore[attr-defined]
                "CPU",
                compile_options(settings),
            )
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise EngineLoadError(f"OpenVINO cannot compile '{path}': {exc}") from exc
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.output_widths = [
            tuple(int(d.get_length()) for d in list(o.get_partial_shape())[1:])
            for o in self.compiled.outputs
        ]
        self.settings = settings

    def infer(self, feeds: Arrays) -> Arrays:
        """One synchronous infer request (outputs copied: the request reuses its buffers)."""
        results = self.request.infer(feeds)
        return {
            name: results[output].copy()
            for name, output in zip(self.output_names, self.compiled.outputs, strict=True)
        }
