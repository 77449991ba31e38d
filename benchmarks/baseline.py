"""The naive baseline: the same model served the way a user would without this project.

One Python process, a plain ``grpcio`` server with a thread pool, and per request: decode the
whole DICOM (``strategy="full"``), preprocess, run the eager torch model at batch 1. No dynamic
batching, no region decoding, no ONNX Runtime, no separate preprocessing processes. It speaks the
subset of the KServe v2 gRPC protocol the client SDK uses (readiness, metadata, ``ModelInfer`` on
``aln_ensemble``), so the same SDK, workload and benchmark code drive both servers, and it uses
the same checkpoint and preprocessing, so both answer the same probabilities.

Three switches turn the naive server, one at a time, towards what the ensemble does (the
ablation of ``aln bench ablation``; :class:`BaselineOptions`): ``--skip-absent-auxiliary`` (do
not run the auxiliary backbone for a study without an auxiliary image: the same network work as
the ensemble, the *equal-work* baseline), ``--engine onnxruntime`` (the exported graphs instead of
eager torch) and ``--decode region`` (decode only the crop).

Run: ``python -m aln.benchmarks.baseline --checkpoint CKPT --port 8101 [--threads 2]``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np
import numpy.typing as npt
import torch
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from aln.model.checkpoint import load_checkpoint
from aln.preprocessing import contract
from aln.preprocessing.decode import DecodeStrategy
from aln.preprocessing.errors import PreprocessingError
from aln.preprocessing.pipeline import StudyTensors
from aln.preprocessing.serving import RawRequest, StudyPreprocessor

Forward = Callable[[StudyTensors], tuple[npt.NDArray[Any], ...]]
"""One study's tensors -> the fusion head's outputs in :data:`contract.FUSION_OUTPUTS` order
(logit, probability, decision), each (1, 1)."""

SERVER_NAME = "aln-naive-baseline"


@dataclass(frozen=True)
class BaselineOptions:
    """How the baseline serves; the defaults are the naive server.

    Attributes:
        workers: gRPC worker threads (requests in flight at once).
        threads: torch (or ONNX Runtime) intra-op threads, set explicitly: the best of the sweep
            in ``benchmarks/results/baseline_threads-*.json`` (``aln bench baseline-threads``).
        engine: ``torch`` (eager, the naive way) or ``onnxruntime`` (the exported graphs, batch 1).
        decode: ``full`` (the naive way) or ``region`` (decode only the crop).
        skip_absent_auxiliary: Skip the auxiliary backbone when a study has no auxiliary image,
            as the served ensemble does: the same network work per study.
    """

    workers: int = 2
    threads: int = 2
    engine: Literal["torch", "onnxruntime"] = "torch"
    decode: DecodeStrategy = "full"
    skip_absent_auxiliary: bool = False

    def arguments(self) -> list[str]:
        """The command-line arguments that reproduce these options."""
        args = ["--workers", str(self.workers), "--threads", str(self.threads)]
        args += ["--engine", self.engine, "--decode", self.decode]
        return args + (["--skip-absent-auxiliary"] if self.skip_absent_auxiliary else [])

    def label(self) -> str:
        """A short name for tables (``naive``, ``equal-work``, or the switches set)."""
        naive = BaselineOptions(workers=self.workers, threads=self.threads)
        if self == naive:
            return "naive"
        if self == replace(naive, skip_absent_auxiliary=True):
            return "equal-work"
        parts = [self.engine, f"{self.decode} decode"]
        return " + ".join(parts + (["skip absent aux"] if self.skip_absent_auxiliary else []))


_NUMPY = {"UINT8": np.uint8, "FP32": np.float32}
_GRPC_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def _input_arrays(request: Any) -> dict[str, npt.NDArray[Any]]:
    arrays = {}
    for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=False):
        if tensor.datatype == "BYTES":
            array = deserialize_bytes_tensor(raw)
        elif tensor.datatype in _NUMPY:
            array = np.frombuffer(raw, dtype=_NUMPY[tensor.datatype])
        else:
            raise PreprocessingError(
                f"Input '{tensor.name}' has datatype {tensor.datatype}, which this baseline "
                "does not take"
            )
        arrays[tensor.name] = array.reshape(tuple(tensor.shape))
    return arrays


def _output(response: Any, name: str, array: npt.NDArray[Any]) -> None:
    tensor = response.outputs.add(name=name, shape=list(array.shape))
    if array.dtype == object:
        tensor.datatype = "BYTES"
        response.raw_output_contents.append(serialize_byte_tensor(array).item())
    else:
        tensor.datatype = "INT32" if array.dtype.kind in "iu" else "FP32"
        dtype = np.int32 if tensor.datatype == "INT32" else np.float32
        response.raw_output_contents.append(array.astype(dtype).tobytes())


def torch_forward(checkpoint: Path, options: BaselineOptions) -> Forward:
    """The eager torch model at batch 1 (the naive engine)."""
    net, _ = load_checkpoint(checkpoint)
    net.eval()

    @torch.inference_mode()
    def forward(t: StudyTensors) -> tuple[npt.NDArray[Any], ...]:
        present = torch.from_numpy(t.auxiliary_present[None])
        primary = net.backbone_primary(torch.from_numpy(t.primary_image[None]))
        if options.skip_absent_auxiliary and not t.auxiliary_present.any():
            auxiliary = torch.zeros_like(primary)  # multiplied by present = 0 in the head
        else:
            auxiliary = net.backbone_auxiliary(torch.from_numpy(t.auxiliary_image[None]))
        clinical = torch.from_numpy(t.clinical_vector[None])
        return tuple(o.numpy() for o in net.fusion_head(primary, auxiliary, present, clinical))

    return forward


def onnxruntime_forward(export: Path, options: BaselineOptions) -> Forward:
    """The exported graphs on ONNX Runtime at batch 1, in this process."""
    from aln.export.onnx_export import GRAPH_FILES
    from aln.serving.engine import OnnxEngine
    from aln.serving.spec import EngineSettings

    settings = EngineSettings(threads=options.threads)
    engines = {model: OnnxEngine(export / name, settings) for model, name in GRAPH_FILES.items()}

    def run(model: str, feeds: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        return engines[model].run(feeds)

    def forward(t: StudyTensors) -> tuple[npt.NDArray[Any], ...]:
        image = contract.BACKBONE_INPUT.name
        embedding = contract.BACKBONE_OUTPUT.name
        primary = run(contract.BACKBONE_PRIMARY, {image: t.primary_image[None]})[embedding]
        if options.skip_absent_auxiliary and not t.auxiliary_present.any():
            auxiliary = np.zeros_like(primary)
        else:
            auxiliary = run(contract.BACKBONE_AUXILIARY, {image: t.auxiliary_image[None]})[
                embedding
            ]
        out = run(
            contract.FUSION_HEAD,
            {
                contract.PRIMARY_EMBEDDING.name: primary,
                contract.AUXILIARY_EMBEDDING.name: auxiliary,
                contract.AUXILIARY_PRESENT.name: t.auxiliary_present[None],
                contract.CLINICAL_VECTOR.name: t.clinical_vector[None],
            },
        )
        return tuple(out[t.name] for t in contract.FUSION_OUTPUTS)

    return forward


class BaselineServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """One request at a time per worker thread: preprocess, then the engine at batch 1.

    Args:
        checkpoint: The checkpoint the ensemble was built from.
        options: Engine, decode, threads and the auxiliary skip.
        export: The ``aln export`` folder of ``checkpoint`` (``engine="onnxruntime"`` only).
    """

    def __init__(
        self, checkpoint: Path, options: BaselineOptions, export: Path | None = None
    ) -> None:
        from aln.preprocessing.manifest import read_manifest

        torch.set_num_threads(options.threads)
        if options.engine == "onnxruntime":
            if export is None:
                raise ValueError("The onnxruntime engine needs the export folder (--export DIR)")
            self.forward = onnxruntime_forward(export, options)
        else:
            self.forward = torch_forward(checkpoint, options)
        self.preprocessor = StudyPreprocessor(read_manifest(checkpoint), strategy=options.decode)

    def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method names)
        """Always live once started."""
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Ready once the model is loaded (in the constructor)."""
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Only ``aln_ensemble`` exists."""
        return service_pb2.ModelReadyResponse(ready=request.name == contract.ENSEMBLE)

    def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Name this server as the baseline."""
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version="1")

    def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Name only; the contract is the ensemble's."""
        return service_pb2.ModelMetadataResponse(name=contract.ENSEMBLE, platform="pytorch")

    def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Preprocess (full decode) and run the eager model on one study."""
        if request.model_name != contract.ENSEMBLE:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Unknown model '{request.model_name}'")
        try:
            tensors = self.preprocessor(RawRequest.from_arrays(_input_arrays(request)))
        except PreprocessingError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        outputs = self.forward(tensors)
        response = service_pb2.ModelInferResponse(model_name=contract.ENSEMBLE, id=request.id)
        for spec, value in zip(contract.FUSION_OUTPUTS, outputs, strict=True):
            _output(response, spec.name, value.reshape(1, 1))
        _output(
            response,
            contract.PROVENANCE.name,
            np.array([[tensors.provenance_json()]], dtype=object),
        )
        return response


def serve(
    checkpoint: Path,
    port: int,
    options: BaselineOptions | None = None,
    export: Path | None = None,
) -> grpc.Server:
    """Start the baseline on ``127.0.0.1:port``; returns the running server."""
    options = options or BaselineOptions()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.workers), options=_GRPC_OPTIONS
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        BaselineServicer(checkpoint, options, export), server
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    defaults = BaselineOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="intra-op threads")
    parser.add_argument("--engine", choices=("torch", "onnxruntime"), default=defaults.engine)
    parser.add_argument("--decode", choices=("full", "region"), default=defaults.decode)
    parser.add_argument("--skip-absent-auxiliary", action="store_true")
    parser.add_argument("--export", type=Path, help="aln export folder (--engine onnxruntime)")
    args = parser.parse_args(argv)
    options = BaselineOptions(
        args.workers, args.threads, args.engine, args.decode, args.skip_absent_auxiliary
    )
    server = serve(args.checkpoint, args.port, options, args.export)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"{SERVER_NAME} ({options.label()}) listening on 127.0.0.1:{args.port}", flush=True)
    stop.wait()
    server.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
