"""The full network: primary and auxiliary backbones and the clinical-fusion head."""

from __future__ import annotations

import torch
from torch import nn

from aln.model.backbones import backbone_spec, create_backbone
from aln.preprocessing.decision import LIKELY_POSITIVE, LOW_RISK, UNAVAILABLE


def _image_projection(embedding_dim: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(embedding_dim), nn.Linear(embedding_dim, width), nn.GELU())


class FusionHead(nn.Module):
    """MLP over ``[primary, auxiliary x present, present, clinical vector]``.

    Each image embedding is normalised and projected to ``image_dim`` values first, so the
    handful of clinical values is not drowned by thousands of image features. The auxiliary
    projection is multiplied by the present flag, so a study without an auxiliary image
    contributes exactly zeros from that branch whatever image was fed to it.

    The probability is the calibrated one: ``sigmoid(slope x logit + intercept)`` with the
    checkpoint's calibration (:meth:`set_calibration`; identity until one is set), so every
    engine exported from the head serves it; the logit stays the network's raw output. The
    decision compares that probability with the operating point's threshold
    (:meth:`set_threshold`) and answers the codes of :mod:`aln.preprocessing.decision`:
    ``UNAVAILABLE`` until a threshold is set, so demo and uncalibrated weights never decide.

    Args:
        embedding_dim: Width of each backbone embedding.
        clinical_dim: Width of the encoded clinical vector (0 to disable the clinical branch).
        hidden_dim: Width of the hidden layer.
        image_dim: Width of each projected image embedding.
        dropout: Dropout before the output layer (training only).
    """

    def __init__(
        self,
        embedding_dim: int,
        clinical_dim: int,
        hidden_dim: int = 256,
        image_dim: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.clinical_dim = clinical_dim
        self.hidden_dim = hidden_dim
        self.primary_projection = _image_projection(embedding_dim, image_dim)
        self.auxiliary_projection = _image_projection(embedding_dim, image_dim)
        self.mlp = nn.Sequential(
            nn.Linear(2 * image_dim + 1 + clinical_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
        )
        # Not in the state dict: the calibration lives in the manifest, fitted after training.
        self.calibration_slope: torch.Tensor
        self.calibration_intercept: torch.Tensor
        self.register_buffer("calibration_slope", torch.ones(1), persistent=False)
        self.register_buffer("calibration_intercept", torch.zeros(1), persistent=False)
        self.decision_threshold: torch.Tensor
        self.register_buffer("decision_threshold", torch.full((1,), -1.0), persistent=False)

    def set_calibration(self, slope: float = 1.0, intercept: float = 0.0) -> None:
        """Map logits to probabilities as ``sigmoid(slope x logit + intercept)`` from now on."""
        self.calibration_slope.fill_(slope)
        self.calibration_intercept.fill_(intercept)

    def set_threshold(self, threshold: float | None) -> None:
        """Decide at ``threshold`` on the calibrated probability from now on (None: no decision)."""
        if threshold is not None and not 0 < threshold <= 1:
            raise ValueError(
                f"A decision threshold of {threshold} is invalid, it must be in (0, 1]"
            )
        self.decision_threshold.fill_(-1.0 if threshold is None else threshold)

    def forward(
        self,
        primary_embedding: torch.Tensor,
        auxiliary_embedding: torch.Tensor,
        auxiliary_present: torch.Tensor,
        clinical_vector: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fuse the branches.

        Args:
            primary_embedding: float32 (N, D).
            auxiliary_embedding: float32 (N, D).
            auxiliary_present: float32 (N, 1), 1.0 or 0.0.
            clinical_vector: float32 (N, C).

        Returns:
            ``(raw logit, calibrated probability, decision)``, each (N, 1): float32, float32,
            int32 (:data:`aln.preprocessing.decision.LIKELY_POSITIVE`, ``LOW_RISK`` or
            ``UNAVAILABLE``).
        """
        features = torch.cat(
            [
                self.primary_projection(primary_embedding),
                self.auxiliary_projection(auxiliary_embedding) * auxiliary_present,
                auxiliary_present,
                clinical_vector,
            ],
            dim=1,
        )
        logit = self.mlp(features)
        probability = torch.sigmoid(logit * self.calibration_slope + self.calibration_intercept)
        decided = (probability >= self.decision_threshold).to(torch.int32) * (
            LIKELY_POSITIVE - LOW_RISK
        ) + LOW_RISK
        decision = torch.where(
            self.decision_threshold > 0, decided, torch.full_like(decided, UNAVAILABLE)
        )
        return logit, probability, decision


class AlnNet(nn.Module):
    """Primary-lesion backbone + auxiliary-region backbone (separate weights) + fusion head.

    Args:
        backbone: Backbone name (both branches use the same architecture).
        clinical_dim: Width of the clinical vector.
        hidden_dim: Fusion hidden width.
    """

    def __init__(self, backbone: str, clinical_dim: int, hidden_dim: int = 256) -> None:
        super().__init__()
        self.backbone_name = backbone
        dim = backbone_spec(backbone).embedding_dim
        self.backbone_primary = create_backbone(backbone)
        self.backbone_auxiliary = create_backbone(backbone)
        self.fusion_head = FusionHead(dim, clinical_dim, hidden_dim)

    def forward(
        self,
        primary_image: torch.Tensor,
        auxiliary_image: torch.Tensor,
        auxiliary_present: torch.Tensor,
        clinical_vector: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict from preprocessed tensors.

        Args:
            primary_image: float32 (N, 3, 256, 256).
            auxiliary_image: float32 (N, 3, 256, 256), zeros when absent.
            auxiliary_present: float32 (N, 1).
            clinical_vector: float32 (N, C).

        Returns:
            ``(logit, probability, decision)`` as :meth:`FusionHead.forward`.
        """
        primary = self.backbone_primary(primary_image)
        auxiliary = self.backbone_auxiliary(auxiliary_image)
        logit, probability, decision = self.fusion_head(
            primary, auxiliary, auxiliary_present, clinical_vector
        )
        return logit, probability, decision
