"""Triton Python-backend adapter for ``preprocess``: DICOM + region + clinical JSON -> tensors.

Everything is built once in ``initialize``; ``execute`` handles the whole batch and answers each
request on its own, so one bad study gets INVALID_ARG and the others in the batch still succeed.
The work itself is :class:`aln.preprocessing.serving.StudyPreprocessor`, tested without a server.
"""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from aln.preprocessing import contract
from aln.preprocessing.errors import PreprocessingError, is_fatal
from aln.preprocessing.serving import RawRequest, StudyPreprocessor


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        self.preprocessor = StudyPreprocessor.from_manifest_file(folder / "manifest.json")
        self.logger = pb_utils.Logger

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            arrays = {}
            for spec in contract.ENSEMBLE_INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                arrays[spec.name] = None if tensor is None else tensor.as_numpy()
            study = self.preprocessor(RawRequest.from_arrays(arrays))
        except PreprocessingError as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except BaseException as exc:  # a bug must fail this request only, never the batch
            if is_fatal(exc):
                raise
            self.logger.log_error(f"preprocess: unexpected {type(exc).__name__}: {exc}")
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"internal preprocessing error ({type(exc).__name__})", pb_utils.TritonError.INTERNAL))
        outputs = {
            contract.PRIMARY_IMAGE.name: study.primary_image,
            contract.AUXILIARY_IMAGE.name: study.auxiliary_image,
            contract.AUXILIARY_PRESENT.name: study.auxiliary_present,
            contract.CLINICAL_VECTOR.name: study.clinical_vector,
            contract.PROVENANCE.name: np.array([study.provenance_json()], dtype=object),
        }
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value[None]) for name, value in outputs.items()])
