"""Export the network as three ONNX graphs named by the one tensor contract.

``backbone_primary.onnx`` and ``backbone_auxiliary.onnx`` (``image`` -> ``embedding``) and
``fusion_head.onnx`` (``primary_embedding``, ``auxiliary_embedding``, ``auxiliary_present``,
``clinical_vector`` -> ``aln_logit``, ``aln_probability``). Image inputs are fixed at 256 x 256;
only the batch dimension is dynamic. The TorchScript exporter is chosen explicitly
(``dynamo=False``): it gives a true opset-17 graph (LayerNorm as one op) in seconds, where the
dynamo exporter cannot go below opset 18 for Swin V2. Each graph passes the full ONNX checker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from aln.model.network import AlnNet
from aln.preprocessing import contract

OPSET = 17
GRAPH_FILES = {
    contract.BACKBONE_PRIMARY: "backbone_primary.onnx",
    contract.BACKBONE_AUXILIARY: "backbone_auxiliary.onnx",
    contract.FUSION_HEAD: "fusion_head.onnx",
}


@dataclass(frozen=True)
class ExportedGraph:
    """One exported graph.

    Attributes:
        model: Triton model name it serves (``backbone_primary``, ...).
        path: The ``.onnx`` file.
        seconds: Export plus checker time.
        size_mb: File size.
    """

    model: str
    path: Path
    seconds: float
    size_mb: float


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    path: Path,
    model: str,
) -> ExportedGraph:
    start = time.perf_counter()
    dynamic = {name: {0: "batch"} for name in (*inputs, *outputs)}
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
    )
    onnx.checker.check_model(str(path), full_check=True)
    return ExportedGraph(model, path, time.perf_counter() - start, path.stat().st_size / 2**20)


def export_onnx(net: AlnNet, out: Path) -> list[ExportedGraph]:
    """Export the two backbones and the fusion head into ``out`` (which must exist).

    Returns:
        The three graphs, in the order primary, auxiliary, fusion.
    """
    net = net.eval()
    image = torch.randn(2, contract.IMAGE_CHANNELS, contract.IMAGE_SIZE, contract.IMAGE_SIZE)
    head = net.fusion_head
    fusion_args = (
        torch.randn(2, head.embedding_dim),
        torch.randn(2, head.embedding_dim),
        torch.ones(2, 1),
        torch.randn(2, head.clinical_dim),
    )
    graphs = []
    for model, module in (
        (contract.BACKBONE_PRIMARY, net.backbone_primary),
        (contract.BACKBONE_AUXILIARY, net.backbone_auxiliary),
    ):
        graphs.append(
            _export(
                module,
                (image,),
                [contract.BACKBONE_INPUT.name],
                [contract.BACKBONE_OUTPUT.name],
                out / GRAPH_FILES[model],
                model,
            )
        )
    graphs.append(
        _export(
            head,
            fusion_args,
            [t.name for t in contract.FUSION_INPUTS],
            [t.name for t in contract.FUSION_OUTPUTS],
            out / GRAPH_FILES[contract.FUSION_HEAD],
            contract.FUSION_HEAD,
        )
    )
    return graphs
