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
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

from aln.preprocessing import contract
from aln.preprocessing.errors import PreprocessingError, is_fatal
from aln.preprocessing.manifest import read_manifest
from aln.preprocessing.serving import RawRequest, StudyPreprocessor
from aln.serving import inflight, occlusion
from aln.serving.engine import RequestFailedError, load_engine
from aln.serving.spec import CHUNK_PARAMETER, DECODE_PARAMETER, ENGINE_PARAMETER, EngineSettings

INTERNAL_PREPROCESSING = "internal preprocessing error"
"""How ``preprocess`` begins the message of a failure that is not the study's fault (a bug)."""


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
        self.marker = inflight.Marker.for_instance(args["model_instance_name"])
        self.quarantine = inflight.Quarantine.from_environment()

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request of the batch."""
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        request_id = request.request_id()
        crash = self.quarantine.cause(request_id) if self.quarantine is not None else None
        if crash is not None:
            message = (
                f"Request '{inflight.clean(request_id)}' was being decoded when {crash}; it is "
                "refused rather than decoded again. Send the study under a new request id to try "
                "it once more (a new call of the SDK does)"
            )
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
            )
        try:
            arrays = {}
            for spec in contract.ENSEMBLE_INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                arrays[spec.name] = None if tensor is None else tensor.as_numpy()
            with inflight.working_on(self.marker, [request_id]):
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
                    f"{INTERNAL_PREPROCESSING} ({type(exc).__name__})",
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
        self.marker = inflight.Marker.for_instance(args["model_instance_name"])

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run the batch; a request the engine cannot run fails alone with its cause."""
        batch = [
            {
                name: pb_utils.get_input_tensor_by_name(r, name).as_numpy()
                for name in self.engine.input_names
            }
            for r in requests
        ]
        with inflight.working_on(self.marker, [r.request_id() for r in requests]):
            outputs = self.engine.run_requests(batch)
        responses = []
        for out in outputs:
            if isinstance(out, RequestFailedError):
                error = pb_utils.TritonError(out.message, pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensors = [pb_utils.Tensor(k, v) for k, v in out.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses


class _ComposingModelError(Exception):
    """A business-logic call to a composing model failed."""

    def __init__(self, model: str, error: Any) -> None:
        super().__init__(error.message())
        self.model = model
        self.message = error.message()

    def as_response_error(self) -> Any:
        """The error to answer with: a study ``preprocess`` refused stays INVALID_ARGUMENT.

        Triton 2.51's BLS hands every composing model's error back with the code INTERNAL, so
        the code is restored from what ``preprocess`` answers: INVALID_ARG for every refusal,
        INTERNAL only with :data:`INTERNAL_PREPROCESSING` (a bug). Engine failures stay INTERNAL.
        """
        refused = self.model == contract.PREPROCESS and not self.message.startswith(
            INTERNAL_PREPROCESSING
        )
        code = pb_utils.TritonError.INVALID_ARG if refused else pb_utils.TritonError.INTERNAL
        return pb_utils.TritonError(self.message, code)


def _call(model: str, inputs: list[Any], outputs: tuple[str, ...]) -> dict[str, npt.NDArray[Any]]:
    """One business-logic (BLS) request to a composing model; its outputs as arrays.

    Raises:
        _ComposingModelError: The model answered with an error.
    """
    request = pb_utils.InferenceRequest(
        model_name=model, requested_output_names=list(outputs), inputs=inputs
    )
    response = request.exec()
    if response.has_error():
        raise _ComposingModelError(model, response.error())
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}


class ExplainModel:
    """``aln_explain``: the prediction and an occlusion map over its primary crop.

    Preprocessing, both backbones and the fusion head are the served models themselves, called
    through business-logic scripting (BLS), so the map is computed by whatever engines the
    repository serves, and a bad study is refused by ``preprocess`` with the same
    INVALID_ARGUMENT as a prediction. The occluded crops go to the backbone a chunk at a time
    (config parameter ``occlusion_chunk``): the engines' queues are first come, first served, so
    a prediction that arrives during an explanation waits behind one chunk, not the whole map.
    """

    def initialize(self, args: dict[str, str]) -> None:
        """Read the chunk size."""
        self.chunk = int(_parameters(args).get(CHUNK_PARAMETER, occlusion.DEFAULT_CHUNK))

    def execute(self, requests: list[Any]) -> list[Any]:
        """Explain each request on its own (an explanation is many engine calls already)."""
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        try:
            grid_tensor = pb_utils.get_input_tensor_by_name(request, contract.EXPLAIN_GRID.name)
            grid = occlusion.check_grid(
                None if grid_tensor is None else int(grid_tensor.as_numpy().reshape(-1)[0])
            )
            study = _call(
                contract.PREPROCESS,
                [
                    tensor
                    for spec in contract.ENSEMBLE_INPUTS
                    if (tensor := pb_utils.get_input_tensor_by_name(request, spec.name)) is not None
                ],
                tuple(t.name for t in contract.PREPROCESS_OUTPUTS),
            )
            outputs = self._explain(study, grid)
        except PreprocessingError as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            )
        except _ComposingModelError as exc:
            return pb_utils.InferenceResponse(error=exc.as_response_error())
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]
        )

    def _explain(
        self, study: dict[str, npt.NDArray[Any]], grid: int
    ) -> dict[str, npt.NDArray[Any]]:
        image = contract.BACKBONE_INPUT.name
        embedding = contract.BACKBONE_OUTPUT.name

        def backbone(model: str, crops: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return _call(model, [pb_utils.Tensor(image, crops)], (embedding,))[embedding]

        primary = study[contract.PRIMARY_IMAGE.name]
        auxiliary = backbone(contract.BACKBONE_AUXILIARY, study[contract.AUXILIARY_IMAGE.name])
        fixed = {
            contract.AUXILIARY_EMBEDDING.name: auxiliary,
            contract.AUXILIARY_PRESENT.name: study[contract.AUXILIARY_PRESENT.name],
            contract.CLINICAL_VECTOR.name: study[contract.CLINICAL_VECTOR.name],
        }
        names = tuple(t.name for t in contract.FUSION_OUTPUTS)

        def head(embeddings: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
            rows = len(embeddings)
            inputs = [pb_utils.Tensor(contract.PRIMARY_EMBEDDING.name, embeddings)] + [
                pb_utils.Tensor(name, np.repeat(value, rows, axis=0))
                for name, value in fixed.items()
            ]
            return _call(contract.FUSION_HEAD, inputs, names)

        answer = head(backbone(contract.BACKBONE_PRIMARY, primary))
        base_logit = float(answer[contract.ALN_LOGIT.name].reshape(-1)[0])
        importance = occlusion.occlusion_map(
            primary[0],
            base_logit,
            grid,
            lambda crops: backbone(contract.BACKBONE_PRIMARY, crops),
            lambda embeddings: head(embeddings)[contract.ALN_LOGIT.name],
            self.chunk,
        )
        provenance = study[contract.PROVENANCE.name]
        box = json.loads(provenance.reshape(-1)[0])["primary"]["crop_box"]
        return {
            contract.EXPLANATION_MAP.name: importance[None],
            contract.EXPLANATION_CROP.name: occlusion.display_crop(primary[0])[None],
            contract.EXPLANATION_BOX.name: np.asarray([box], dtype=np.int32),
            **answer,
            contract.PROVENANCE.name: provenance,
        }
