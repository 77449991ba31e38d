import json

import numpy as np
import onnx
import pytest

from aln.export.pipeline import REPORT_FILE, export_checkpoint, graph_paths
from aln.model.checkpoint import new_demo_checkpoint
from aln.model.errors import CheckpointError, ModelError
from aln.preprocessing import contract
from aln.serving.tensorrt import TensorRTUnavailableError

FAST = ["efficientnet_b0", "swinv2_tiny_window8_256", "resnet50"]
SLOW = ["swinv2_small_window8_256", "swinv2_base_window8_256"]


def _export(tmp_path, backbone):
    ckpt = tmp_path / "ckpt"
    new_demo_checkpoint(ckpt, backbone, seed=1)
    return ckpt, export_checkpoint(ckpt, tmp_path / "export")


@pytest.mark.parametrize("backbone", FAST + [pytest.param(b, marks=pytest.mark.slow) for b in SLOW])
def test_every_backbone_exports_and_passes_parity(tmp_path, backbone):
    _, report = _export(tmp_path, backbone)
    assert report["parity"]["passed"] and report["opset"] >= 17
    results = report["parity"]["results"]
    assert {r["batch"] for r in results} == {1, 8}
    assert all(r["max_abs_diff"] <= 1e-4 for r in results)
    assert json.loads((tmp_path / "export" / REPORT_FILE).read_text()) == report


def test_graphs_follow_the_contract(tmp_path):
    _export(tmp_path, "efficientnet_b0")
    paths = graph_paths(tmp_path / "export")
    backbone = onnx.load(str(paths[contract.BACKBONE_PRIMARY]), load_external_data=False)
    (inp,) = backbone.graph.input
    assert inp.name == contract.BACKBONE_INPUT.name
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 256, 256]  # fixed 256x256, dynamic batch only
    assert [o.name for o in backbone.graph.output] == [contract.BACKBONE_OUTPUT.name]
    assert max(o.version for o in backbone.opset_import if o.domain in ("", "ai.onnx")) >= 17
    fusion = onnx.load(str(paths[contract.FUSION_HEAD]))
    assert [i.name for i in fusion.graph.input] == [t.name for t in contract.FUSION_INPUTS]
    assert [o.name for o in fusion.graph.output] == [t.name for t in contract.FUSION_OUTPUTS]


def test_bad_checkpoint_writes_nothing(tmp_path):
    ckpt = tmp_path / "ckpt"
    new_demo_checkpoint(ckpt, "efficientnet_b0")
    (ckpt / "weights.safetensors").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError):
        export_checkpoint(ckpt, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    import aln.export.pipeline as pipeline
    from aln.export.parity import ParityResult

    ckpt = tmp_path / "ckpt"
    new_demo_checkpoint(ckpt, "efficientnet_b0")
    monkeypatch.setattr(
        pipeline,
        "check_parity",
        lambda net, graphs: [ParityResult("backbone_primary", "embedding", 8, 0.5, 1e-4)],
    )
    with pytest.raises(
        pipeline.ParityError, match="backbone_primary.embedding at batch 8: max abs diff 5.00e-01"
    ):
        export_checkpoint(ckpt, tmp_path / "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_invalid_options(tmp_path):
    with pytest.raises(ModelError, match="'fp16' is invalid for onnx engines, it must be one of"):
        export_checkpoint(tmp_path, tmp_path / "out", "onnx", "fp16")
    with pytest.raises(ModelError, match="'fp16' is invalid for openvino engines"):
        export_checkpoint(tmp_path, tmp_path / "out", "openvino", "fp16")
    with pytest.raises(ModelError, match="format of 'tflite'"):
        export_checkpoint(tmp_path, tmp_path / "out", "tflite")


def test_tensorrt_without_gpu_says_so(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed|No CUDA GPU"):
        export_checkpoint(tmp_path, tmp_path / "out", "tensorrt", "fp16")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_plans_match_onnx_runtime_on_a_trained_model(tmp_path, precision):
    """fp16 within 1e-2 and int8 within its documented bound of ONNX Runtime fp32, on 64 crops
    made by the served preprocessing from studies of a model trained on the synthetic cohort
    (random weights put every probability near 0.5, which would make any bound meaningless)."""
    pytest.importorskip("tensorrt")
    from aln.export.calibration import calibration_set
    from aln.export.tensorrt import FP16_PROBABILITY_TOLERANCE, INT8_PROBABILITY_TOLERANCE
    from aln.preprocessing.manifest import read_manifest
    from aln.serving.engine import OnnxEngine
    from aln.serving.tensorrt import TensorRtEngine
    from aln.synthetic.cohort import write_cohort
    from aln.training.cohort import read_cohort
    from aln.training.trainer import TrainConfig, train

    cohort = tmp_path / "cohort"
    write_cohort(cohort, 160, seed=5, shape=(1400, 1150), cohort=True)
    config = TrainConfig(
        backbone="efficientnet_b0", epochs=4, patience=10, augment=False, freeze_backbones=True
    )
    ckpt = train(
        read_cohort(cohort / "manifest.csv"), config, tmp_path / "ckpt", tmp_path / "cache"
    ).checkpoint
    export = tmp_path / "export"
    export_checkpoint(ckpt, export, "tensorrt", precision, max_batch=64, calibration=cohort)
    crops = calibration_set(cohort, read_manifest(ckpt), count=64, seed=1).crops
    assert len(crops) == 64
    probabilities = {}
    for kind, engines in (
        (
            "onnx",
            {m: OnnxEngine(export / f"{m}.onnx") for m in ("backbone_primary", "fusion_head")},
        ),
        (
            "plan",
            {m: TensorRtEngine(export / f"{m}.plan") for m in ("backbone_primary", "fusion_head")},
        ),
    ):
        embedding = engines["backbone_primary"].run({"image": crops})["embedding"]
        head = engines["fusion_head"].run(
            {
                "primary_embedding": embedding,
                "auxiliary_embedding": np.zeros_like(embedding),
                "auxiliary_present": np.zeros((64, 1), np.float32),
                "clinical_vector": np.zeros((64, 40), np.float32),
            }
        )
        probabilities[kind] = head["aln_probability"].ravel()
    bound = FP16_PROBABILITY_TOLERANCE if precision == "fp16" else INT8_PROBABILITY_TOLERANCE
    difference = np.abs(probabilities["onnx"] - probabilities["plan"])
    assert probabilities["onnx"].std() > 0.01  # a trained model spreads its probabilities
    assert difference.max() <= bound, (precision, float(difference.max()))
