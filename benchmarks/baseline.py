"""The naive baseline: the same model served the way a user would without this project.

One Python process, a plain ``grpcio`` server with a thread pool, and per request: decode the
whole DICOM (``strategy="full"``), preprocess, run the eager torch model at batch 1. No dynamic
batching, no region decoding, no ONNX Runtime, no separate preprocessing processes. It speaks the
subset of the KServe v2 gRPC protocol the client SDK uses (readiness, metadata, ``ModelInfer`` on
``aln_ensemble``), so the same SDK, workload and benchmark code drive both servers, and it uses
the same checkpoint and preprocessing, so both answer the same probabilities.

Run: ``python -m aln.benchmarks.baseline --checkpoint CKPT --port 8101``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import torch
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from aln.model.checkpoint import load_checkpoint
from aln.preprocessing import contract
from aln.preprocessing.errors import PreprocessingError
from aln.preprocessing.serving import RawRequest, StudyPreprocessor

SERVER_NAME = "aln-naive-baseline"
DEFAULT_WORKERS = 2
"""gRPC worker threads: the best of 1, 2, 4 and 8 on the 2-core CI machine (measured side by
side in ``benchmarks/README.md``; more threads oversubscribe the cores with eager forwards)."""
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
        tensor.datatype = "FP32"
        response.raw_output_contents.append(array.astype(np.float32).tobytes())


class BaselineServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Eager torch, one request at a time per worker thread, full DICOM decode.

    Args:
        checkpoint: The checkpoint the ensemble was built from.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.net, manifest = load_checkpoint(checkpoint)
        self.net.eval()
        self.preprocessor = StudyPreprocessor(manifest, strategy="full")

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
        with torch.inference_mode():
            logit, probability = self.net(
                torch.from_numpy(tensors.primary_image[None]),
                torch.from_numpy(tensors.auxiliary_image[None]),
                torch.from_numpy(tensors.auxiliary_present[None]),
                torch.from_numpy(tensors.clinical_vector[None]),
            )
        response = service_pb2.ModelInferResponse(model_name=contract.ENSEMBLE, id=request.id)
        _output(response, contract.ALN_PROBABILITY.name, probability.numpy().reshape(1, 1))
        _output(response, contract.ALN_LOGIT.name, logit.numpy().reshape(1, 1))
        _output(
            response,
            contract.PROVENANCE.name,
            np.array([[tensors.provenance_json()]], dtype=object),
        )
        return response


def serve(checkpoint: Path, port: int, workers: int = DEFAULT_WORKERS) -> grpc.Server:
    """Start the baseline on ``127.0.0.1:port``; returns the running server."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=_GRPC_OPTIONS)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        BaselineServicer(checkpoint), server
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args(argv)
    server = serve(args.checkpoint, args.port, args.workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"{SERVER_NAME} listening on 127.0.0.1:{args.port}", flush=True)
    stop.wait()
    server.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
