"""The in-process reference predictor: DICOM(s) + regions + clinical record -> probability.

Uses exactly the preprocessing the server uses and the torch model; the served ensemble is
checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aln.model.checkpoint import load_checkpoint
from aln.model.network import AlnNet
from aln.preprocessing.decision import Decision
from aln.preprocessing.manifest import Manifest
from aln.preprocessing.pipeline import StudyInput, StudyTensors, preprocess_study


@dataclass(frozen=True)
class ReferenceResult:
    """One prediction made in process.

    Attributes:
        probability: P(axillary nodes positive after NAT).
        logit: The fusion head's logit.
        decision: The decision at the checkpoint's operating point.
        provenance: As served (model, preprocessing version, per-image provenance).
        tensors: The preprocessed inputs (for parity checks).
    """

    probability: float
    logit: float
    decision: Decision
    provenance: dict[str, Any]
    tensors: StudyTensors


class ReferencePredictor:
    """Load a checkpoint once; predict studies one at a time in this process.

    Args:
        checkpoint: Checkpoint folder.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.net: AlnNet
        self.manifest: Manifest
        self.net, self.manifest = load_checkpoint(Path(checkpoint))
        self.schema = self.manifest.schema
        self.crop = self.manifest.crop
        self.model_info = self.manifest.identity

    def preprocess(
        self,
        primary: StudyInput,
        clinical: bytes | str | dict[str, Any],
        auxiliary: StudyInput | None = None,
    ) -> StudyTensors:
        """Preprocess a study with this checkpoint's crop spec and clinical schema.

        Raises:
            PreprocessingError: Bad input, or an auxiliary image for an image-only model.
        """
        if auxiliary is not None:
            self.manifest.check_auxiliary_allowed()
        return preprocess_study(
            primary, clinical, self.schema, self.crop, auxiliary, model_info=self.model_info
        )

    @torch.inference_mode()
    def predict(
        self,
        primary: StudyInput,
        clinical: bytes | str | dict[str, Any],
        auxiliary: StudyInput | None = None,
    ) -> ReferenceResult:
        """Predict one study.

        Raises:
            PreprocessingError: Bad DICOM, region or clinical record (naming the cause).
        """
        tensors = self.preprocess(primary, clinical, auxiliary)
        logit, probability, decision = self.net(
            torch.from_numpy(tensors.primary_image[None]),
            torch.from_numpy(tensors.auxiliary_image[None]),
            torch.from_numpy(tensors.auxiliary_present[None]),
            torch.from_numpy(tensors.clinical_vector[None]),
        )
        return ReferenceResult(
            probability=float(np.float32(probability.item())),
            logit=float(np.float32(logit.item())),
            decision=Decision.from_code(int(decision.item())),
            provenance=tensors.provenance,
            tensors=tensors,
        )
