"""Triton Python-backend adapter for an ONNX engine (both backbones and the fusion head).

The embedded profile's server has only the Python backend, so engines run here on ONNX Runtime;
the production profile serves the same graphs with ``onnxruntime_onnx`` or ``tensorrt_plan``.
One ONNX Runtime call per dynamic batch; the work is :class:`aln.export.engine.OnnxEngine`.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from aln.export.engine import OnnxEngine


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.engine = OnnxEngine(
            Path(args["model_repository"]) / args["model_version"] / "model.onnx",
            threads=int(parameters.get("intra_op_threads", "1")),
            skip_all_zero_rows=parameters.get("skip_all_zero_rows", "false") == "true",
            spinning=parameters.get("intra_op_spinning", "false") == "true",
        )

    def execute(self, requests):
        batch = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.engine.input_names}
            for r in requests
        ]
        outputs = self.engine.run_requests(batch)
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in out.items()])
            for out in outputs
        ]
