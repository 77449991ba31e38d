"""The Triton Python-backend models of the embedded profile: thin adapters over library code.

Each model folder of a generated repository holds a one-line ``model.py`` that imports one of
these classes as ``TritonPythonModel`` (:func:`aln.serving.spec.adapter_source`), so a wheel
install serves exactly this code and the three engine models share one adapter. The work itself is
:class:`aln.preprocessing.serving.StudyPreprocessor` and :class:`aln.serving.engine.OnnxEngine`,
tested without a server. This module imports ``triton_python_backend_utils``, which exists only
inside the Python-backend stub process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from aln.preprocessing import contract
from aln.preprocessing.errors import PreprocessingError, is_fatal
from aln.preprocessing.manifest import read_manifest
from aln.preprocessing.serving import RawRequest, StudyPreprocessor
from aln.serving.engine import RequestFailedError, load_engine
from aln.serving.spec import DECODE_PARAMETER, ENGINE_PARAMETER, EngineSettings


def _version_folder(args: dict[str, str]) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def _parameters(args: dict[str, str]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


class PreprocessModel:
    """``preprocess``: DICOM + region + clinical JSON -> tensors, one response per request.

    Everything is built once in ``initialize``; ``execute`` answers each request on its own, so
    one bad study gets INVALID_ARG and the others in the batch still succeed.
    """

    def initialize(self, args: dict[str, str]) -> None:
        """Load the checkpoint manifest served beside this model; read the decode strategy."""
        parameters = _parameters(args)
        decode = parameters.get(DECODE_PARAMETER, "region")
        if decode not in ("region", "full"):
            raise ValueError(f"Parameter '{DECODE_PARAMETER}' is '{decode}', not region or full")
        self.preprocessor = StudyPreprocessor(
            read_manifest(_version_folder(args)),
            strategy=decode,  # type: ignore[arg-type]
            engine=parameters.get(ENGINE_PARAMETER),
        )
        self.logger = pb_utils.Logger

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request of the batch."""
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        try:
            arrays = {}
            for spec in contract.ENSEMBLE_INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                arrays[spec.name] = None if tensor is None else tensor.as_numpy()
            study = self.preprocessor(RawRequest.from_arrays(arrays))
        except PreprocessingError as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            )
        except BaseException as exc:  # a bug must fail this request only, never the batch
            if is_fatal(exc):
                raise
            self.logger.log_error(f"preprocess: unexpected {type(exc).__name__}: {exc}")
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"internal preprocessing error ({type(exc).__name__})",
                    pb_utils.TritonError.INTERNAL,
                )
            )
        outputs = {
            contract.PRIMARY_IMAGE.name: study.primary_image,
            contract.AUXILIARY_IMAGE.name: study.auxiliary_image,
            contract.AUXILIARY_PRESENT.name: study.auxiliary_present,
            contract.CLINICAL_VECTOR.name: study.clinical_vector,
            contract.PROVENANCE.name: np.array([study.provenance_json()], dtype=object),
        }
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value[None]) for name, value in outputs.items()]
        )


class EngineModel:
    """An engine (either backbone or the fusion head): one engine call per dynamic batch.

    The embedded server has only the Python backend, so engines run here: ``model.onnx`` on ONNX
    Runtime, ``model.xml`` on OpenVINO (its precision checked against this CPU), or a TensorRT
    ``model.plan`` whose sidecar is checked against this machine before it loads
    (:func:`aln.serving.engine.load_engine`). The production profile serves the same
    graphs with Triton's own backends. Settings come from the config's ``parameters``
    (:class:`aln.serving.spec.EngineSettings`).
    """

    def initialize(self, args: dict[str, str]) -> None:
        """Load the engine with the settings of the model config (a mismatched plan is refused)."""
        settings = EngineSettings.from_parameters(_parameters(args))
        self.engine = load_engine(_version_folder(args), settings)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run the batch; a request the engine cannot run fails alone with its cause."""
        batch = [
            {
                name: pb_utils.get_input_tensor_by_name(r, name).as_numpy()
                for name in self.engine.input_names
            }
            for r in requests
        ]
        responses = []
        for out in self.engine.run_requests(batch):
            if isinstance(out, RequestFailedError):
                error = pb_utils.TritonError(out.message, pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensors = [pb_utils.Tensor(k, v) for k, v in out.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
