"""The engines as the embedded profile serves them, one dynamic batch at a time.

The Triton engine model (:class:`aln.serving.triton_models.EngineModel`, shared by both backbones
and the fusion head) concatenates the requests of a dynamic batch, runs one engine call and
splits the outputs back; that logic (:class:`Engine`) lives here so it is tested without a server,
and every runtime (ONNX Runtime here, OpenVINO in :mod:`aln.serving.openvino`, TensorRT in
:mod:`aln.serving.tensorrt`) shares it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.serving.errors import EngineLoadError
from aln.serving.spec import ENGINE_FILES, EngineSettings

Arrays = dict[str, npt.NDArray[Any]]


class RequestFailedError(Exception):
    """One request of a batch that the engine could not run (the others were answered).

    Attributes:
        message: What failed, naming the input and its shape.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Engine:
    """What every engine runtime shares: zero-row skipping and batches of requests.

    Subclasses set :attr:`input_names`, :attr:`output_names`, :attr:`output_widths` (each
    output's shape without the batch) and :attr:`settings`, and implement :meth:`infer`.
    """

    input_names: list[str]
    output_names: list[str]
    output_widths: list[tuple[int, ...]]
    settings: EngineSettings

    def infer(self, feeds: Arrays) -> Arrays:
        """Run the graph on one batch (every input has the same leading batch size)."""
        raise NotImplementedError

    def run(self, feeds: Arrays) -> Arrays:
        """Run one batch, skipping all-zero rows when the settings say so."""
        batch = next(iter(feeds.values())).shape[0]
        if not self.settings.skip_all_zero_rows:
            return self.infer(feeds)
        keep = np.ones(batch, dtype=bool)
        for value in feeds.values():
            keep &= value.reshape(batch, -1).any(axis=1)
        outputs = {
            name: np.zeros((batch, *width), dtype=np.float32)
            for name, width in zip(self.output_names, self.output_widths, strict=True)
        }
        if keep.any():
            results = self.infer({k: v[keep] for k, v in feeds.items()})
            for name in self.output_names:
                outputs[name][keep] = results[name]
        return outputs

    def run_requests(self, requests: Sequence[Arrays]) -> list[Arrays | RequestFailedError]:
        """Run many requests as one batch and split the outputs back per request.

        When the batch as a whole fails, each request is run alone, so a request the engine
        cannot take fails by itself and its batch-mates are still answered.

        Returns:
            Per request, its outputs or the :class:`RequestFailedError` that explains it.
        """
        try:
            return self._run_together(requests)
        except Exception:
            return [self._run_alone(r) for r in requests]

    def _run_together(self, requests: Sequence[Arrays]) -> list[Arrays | RequestFailedError]:
        sizes = [next(iter(r.values())).shape[0] for r in requests]
        feeds = {name: np.concatenate([r[name] for r in requests]) for name in self.input_names}
        outputs = self.run(feeds)
        bounds = np.cumsum([0, *sizes])
        return [
            {name: value[bounds[i] : bounds[i + 1]] for name, value in outputs.items()}
            for i in range(len(requests))
        ]

    def _run_alone(self, request: Arrays) -> Arrays | RequestFailedError:
        try:
            return self.run({name: request[name] for name in self.input_names})
        except Exception as exc:
            shapes = ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in request.items())
            return RequestFailedError(f"The engine could not run this request ({shapes}): {exc}")


class OnnxEngine(Engine):
    """One ONNX graph on ONNX Runtime's CPU provider, full graph optimisation.

    Args:
        path: The ``.onnx`` file.
        settings: Threads, spinning and zero-row skipping (:class:`EngineSettings`).

    Raises:
        EngineLoadError: The file is missing or ONNX Runtime cannot load it.
    """

    def __init__(self, path: Path, settings: EngineSettings | None = None) -> None:
        import onnxruntime as ort

        settings = settings or EngineSettings()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        if not settings.spinning:  # idle threads sleep, leaving the cores to preprocessing
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not Path(path).is_file():
            raise EngineLoadError(f"The engine file '{path}' does not exist")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph classes
            raise EngineLoadError(f"ONNX Runtime cannot load '{path}': {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_widths = [
            tuple(int(d) for d in o.shape[1:]) for o in self.session.get_outputs()
        ]
        self.settings = settings

    def infer(self, feeds: Arrays) -> Arrays:
        """One ONNX Runtime call."""
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))


def load_engine(folder: Path, settings: EngineSettings) -> Engine:
    """The engine in a model version folder: ``model.plan``, ``model.xml`` or ``model.onnx``.

    File names are :data:`aln.serving.spec.ENGINE_FILES`. A plan's sidecar is checked against
    this machine before it is deserialised; an OpenVINO engine's precision against this CPU.

    Raises:
        EngineLoadError: No engine file, or one that cannot be loaded (a plan built elsewhere is
            refused naming both TensorRT releases or GPUs; a bf16 IR on a CPU without bf16).
        MissingComponentError: A plan without TensorRT or a GPU, an IR without OpenVINO.
    """
    folder = Path(folder)
    plan = folder / ENGINE_FILES["tensorrt"]
    if plan.is_file():
        from aln.serving.tensorrt import TensorRtEngine

        return TensorRtEngine(plan, settings)
    ir = folder / ENGINE_FILES["openvino"]
    if ir.is_file():
        from aln.serving.openvino import OpenVinoEngine

        return OpenVinoEngine(ir, settings)
    return OnnxEngine(folder / ENGINE_FILES["onnx"], settings)
