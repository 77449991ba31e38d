"""Reduced-work CPU engines from the exported fp32 ONNX graphs: OpenVINO IR and int8 QDQ ONNX.

* OpenVINO fp32 and bf16: the graph read by OpenVINO and saved as IR with fp32 weights (bf16 is
  OpenVINO's runtime precision hint, which the served engine sets from the export's precision).
* OpenVINO int8: NNCF post-training quantisation on calibration crops, with the mixed preset
  (asymmetric activations: SiLU and GELU outputs are not sign-symmetric) and, for Swin V2,
  transformer mode (which keeps LayerNorm, Softmax and the attention's scaling in floating point).
* ONNX int8: ONNX Runtime static quantisation in QDQ format (per-channel int8 weights, uint8
  activations, only the MatMul/Gemm/Conv whose second input is a weight), servable by ONNX
  Runtime and by Triton's ``onnxruntime_onnx`` backend.

The fusion head of an int8 export stays fp32: a few thousand multiply-adds on embeddings, nothing
to save and a calibration that would need embeddings, not images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.preprocessing import contract
from aln.serving.openvino import openvino_core

INT8_SUFFIX = ".int8.onnx"
"""The file suffix of a quantised ONNX graph beside its fp32 graph."""


def openvino_ir(
    graph: Path,
    xml: Path,
    precision: str,
    crops: npt.NDArray[np.float32] | None = None,
    transformer: bool = True,
) -> Path:
    """Write the OpenVINO IR (``xml`` and its ``.bin``) of an ONNX graph.

    Args:
        graph: The fp32 ONNX graph.
        xml: The ``.xml`` to write.
        precision: ``fp32``, ``bf16`` (the same IR; bf16 is a runtime hint) or ``int8``.
        crops: Calibration crops (int8).
        transformer: Quantise in NNCF's transformer mode (Swin V2).
    """
    import openvino as ov

    core = openvino_core()
    model = core.read_model(str(graph))  # type: ignore[attr-defined]
    if precision == "int8":
        import nncf

        if crops is None:
            raise ValueError(f"int8 IR of {graph.name} needs calibration crops")
        dataset = nncf.Dataset([crops[i : i + 1] for i in range(len(crops))])
        model = nncf.quantize(
            model,
            dataset,
            # asymmetric activations: SiLU/GELU outputs are not sign-symmetric
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(crops),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
        )
    # fp16 weight compression is OpenVINO's default and would change fp32 numerics
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def onnx_int8(graph: Path, out: Path, crops: npt.NDArray[np.float32]) -> Path:
    """Write a statically quantised (QDQ) ONNX graph calibrated on ``crops``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(
                {contract.BACKBONE_INPUT.name: crops[i : i + 1]} for i in range(len(crops))
            )

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # symbolic shape inference cannot follow Swin V2's window reshapes; ONNX's own suffices
        quant_pre_process(str(graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            extra_options={"MatMulConstBOnly": True},
        )
    return out
