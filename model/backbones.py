"""The five selectable image backbones (the paper compared five) and how to build them.

Each returns an embedding per crop: timm models built with ``num_classes=0`` end in global
pooling, so ``forward`` gives ``forward_head(forward_features(x), pre_logits=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aln.model.errors import ModelError
from aln.preprocessing import contract

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """A selectable backbone.

    Attributes:
        name: The timm variant name (spells the architecture).
        embedding_dim: Width of the pooled embedding.
        family: ``"swinv2"`` or ``"cnn"``.
    """

    name: str
    embedding_dim: int
    family: str


DEFAULT_BACKBONE = "swinv2_tiny_window8_256"
"""The paper's best backbone; every command and benchmark defaults to it."""

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(DEFAULT_BACKBONE, 768, "swinv2"),
        BackboneSpec("swinv2_small_window8_256", 768, "swinv2"),
        BackboneSpec("swinv2_base_window8_256", 1024, "swinv2"),
        BackboneSpec("resnet50", 2048, "cnn"),
        BackboneSpec("efficientnet_b0", 1280, "cnn"),
    )
}


def backbone_spec(name: str) -> BackboneSpec:
    """Look up a backbone by name.

    Raises:
        ModelError: Unknown name (the message lists the five).
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ModelError(
            f"A backbone name of '{name}' is invalid, it must be one of {', '.join(BACKBONES)}"
        ) from None


def create_backbone(name: str) -> nn.Module:
    """Build a randomly initialised, headless backbone for 256 x 256 crops.

    Args:
        name: One of :data:`BACKBONES`.

    Returns:
        A module mapping float32 (N, 3, 256, 256) to float32 (N, embedding_dim).
    """
    import timm  # deferred: the registry is read by the CLI without loading torch

    spec = backbone_spec(name)
    kwargs: dict[str, Any] = {"img_size": contract.IMAGE_SIZE} if spec.family == "swinv2" else {}
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if model.num_features != spec.embedding_dim:
        raise ModelError(
            f"timm's '{name}' has {model.num_features} features, the registry says "
            f"{spec.embedding_dim}"
        )
    return model
