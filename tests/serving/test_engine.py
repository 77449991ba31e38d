"""The engine runtime the three engine models share: batches, zero rows, one failing request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from aln.serving.engine import OnnxEngine, RequestFailedError
from aln.serving.errors import EngineLoadError
from aln.serving.spec import EngineSettings

WEIGHTS = np.arange(8, dtype=np.float32).reshape(4, 2)


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    """``embedding = image @ W``: float32 (N, 4) -> (N, 2), dynamic batch."""
    node = helper.make_node("MatMul", ["image", "w"], ["embedding"])
    model = helper.make_model(
        helper.make_graph(
            [node],
            "tiny",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 4])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 2])],
            [helper.make_tensor("w", TensorProto.FLOAT, [4, 2], WEIGHTS.ravel().tolist())],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = tmp_path_factory.mktemp("engine") / "model.onnx"
    onnx.save(model, path)
    return path


def test_a_batch_of_requests_is_run_once_and_split_back(graph):
    engine = OnnxEngine(graph)
    requests = [{"image": np.full((1, 4), i, np.float32)} for i in range(1, 4)]
    outputs = engine.run_requests(requests)
    for i, out in enumerate(outputs, start=1):
        assert not isinstance(out, RequestFailedError)
        np.testing.assert_allclose(out["embedding"], np.full((1, 4), i) @ WEIGHTS)


def test_one_request_the_engine_cannot_run_fails_alone(graph):
    engine = OnnxEngine(graph)
    good = {"image": np.ones((1, 4), np.float32)}
    bad = {"image": np.ones((1, 5), np.float32)}  # a width the graph does not take
    outputs = engine.run_requests([good, bad, good])
    assert isinstance(outputs[1], RequestFailedError)
    assert "image [1, 5] float32" in outputs[1].message
    for out in (outputs[0], outputs[2]):
        assert not isinstance(out, RequestFailedError)
        np.testing.assert_allclose(out["embedding"], np.ones((1, 4)) @ WEIGHTS)


def test_all_zero_rows_are_skipped_and_answered_with_zeros(graph):
    engine = OnnxEngine(graph, EngineSettings(skip_all_zero_rows=True))
    feeds = {"image": np.stack([np.zeros(4, np.float32), np.ones(4, np.float32)])}
    out = engine.run(feeds)["embedding"]
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1], np.ones(4) @ WEIGHTS)


def test_a_missing_or_broken_engine_file_is_named(tmp_path):
    with pytest.raises(EngineLoadError, match="model.onnx' does not exist"):
        OnnxEngine(tmp_path / "model.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(EngineLoadError, match="ONNX Runtime cannot load .*broken.onnx"):
        OnnxEngine(tmp_path / "broken.onnx")
