"""Parity of exported graphs against torch, enforced with stated tolerances.

fp32 ONNX Runtime vs torch eager, at batch 1 and batch 8: the maximum absolute difference of the
embeddings and of the probability must be at most 1e-4 (measured values are about 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aln.model.network import AlnNet
from aln.preprocessing import contract

FP32_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 8)


@dataclass(frozen=True)
class ParityResult:
    """One parity measurement.

    Attributes:
        model: Which graph.
        output: Which output tensor.
        batch: Batch size.
        max_abs_diff: Largest absolute difference from torch.
        tolerance: The bound it must meet.
    """

    model: str
    output: str
    batch: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """Within tolerance."""
        return self.max_abs_diff <= self.tolerance


def ort_session(path: Path, threads: int | None = None) -> object:
    """An ONNX Runtime CPU session with full graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def check_parity(
    net: AlnNet, graphs: dict[str, Path], seed: int = 0, tolerance: float = FP32_TOLERANCE
) -> list[ParityResult]:
    """Compare each ONNX graph with its torch module at batch 1 and 8.

    Args:
        net: The torch network (eval mode).
        graphs: Maps model name (``backbone_primary``, ...) to its ``.onnx`` path.
        seed: Seed of the random test inputs.
        tolerance: Maximum absolute difference allowed.
    """
    rng = np.random.default_rng(seed)
    head = net.fusion_head
    results = []
    for batch in PARITY_BATCHES:
        image = rng.standard_normal(
            (batch, contract.IMAGE_CHANNELS, contract.IMAGE_SIZE, contract.IMAGE_SIZE)
        ).astype(np.float32)
        for model, module in (
            (contract.BACKBONE_PRIMARY, net.backbone_primary),
            (contract.BACKBONE_AUXILIARY, net.backbone_auxiliary),
        ):
            expected = module(torch.from_numpy(image)).numpy()
            got = ort_session(graphs[model]).run(None, {contract.BACKBONE_INPUT.name: image})[0]  # type: ignore[attr-defined]
            results.append(
                ParityResult(
                    model,
                    contract.BACKBONE_OUTPUT.name,
                    batch,
                    float(np.abs(got - expected).max()),
                    tolerance,
                )
            )
        fusion = {
            contract.PRIMARY_EMBEDDING.name: rng.standard_normal((batch, head.embedding_dim)),
            contract.AUXILIARY_EMBEDDING.name: rng.standard_normal((batch, head.embedding_dim)),
            contract.AUXILIARY_PRESENT.name: rng.integers(0, 2, (batch, 1)),
            contract.CLINICAL_VECTOR.name: rng.standard_normal((batch, head.clinical_dim)),
        }
        fusion = {k: v.astype(np.float32) for k, v in fusion.items()}
        expected = head(*(torch.from_numpy(v) for v in fusion.values()))
        got = ort_session(graphs[contract.FUSION_HEAD]).run(None, fusion)  # type: ignore[attr-defined]
        for spec, want, have in zip(contract.FUSION_OUTPUTS, expected, got, strict=True):
            results.append(
                ParityResult(
                    contract.FUSION_HEAD,
                    spec.name,
                    batch,
                    float(np.abs(have.astype(np.float64) - want.numpy()).max()),
                    tolerance,
                )
            )
    return results
