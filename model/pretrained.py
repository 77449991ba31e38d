"""Pretrained initialisation of a backbone from a local weights file (the paper's pre-training).

Accepts timm-format state dicts and the original Swin V2 release format (keys under ``model``,
patch merging at the end of each stage, classifier at ``head``), in safetensors or PyTorch
files. Original Swin V2 keys are remapped with timm's own ``checkpoint_filter_fn`` (which also
resizes relative-position tables and patch embeddings). The classifier is discarded (the
backbones are headless). Any backbone parameter the file does not provide is an error: a layer is
never silently left at its random initial value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from aln.model.backbones import backbone_spec
from aln.model.errors import InitWeightsError

_CLASSIFIER_PREFIXES = ("head.", "fc.", "classifier.")


@dataclass(frozen=True)
class InitReport:
    """What loading a pretrained file did.

    Attributes:
        path: The file.
        loaded: Number of tensors loaded into the backbone.
        discarded_classifier: Classifier keys dropped (the backbone is headless).
        unexpected: Keys in the file that the backbone does not have (reported, not loaded).
        remapped: The file was in the original Swin V2 layout and was remapped.
    """

    path: str
    loaded: int
    discarded_classifier: tuple[str, ...]
    unexpected: tuple[str, ...]
    remapped: bool


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors or PyTorch weights file, unwrapping ``model``/``state_dict``.

    Raises:
        InitWeightsError: Missing, unreadable, or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InitWeightsError(f"The init-weights file '{path}' does not exist")
    try:
        if path.suffix == ".safetensors":
            state: object = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for bad files
        raise InitWeightsError(f"The init-weights file '{path}' cannot be read: {exc}") from exc
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InitWeightsError(f"The init-weights file '{path}' does not hold a dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_init_weights(backbone: nn.Module, name: str, path: Path) -> InitReport:
    """Initialise ``backbone`` (built by :func:`aln.model.backbones.create_backbone`) from a file.

    Raises:
        InitWeightsError: A backbone parameter is missing from the file, or a shape differs.
    """
    spec = backbone_spec(name)
    state = read_state_dict(path)
    remapped = False
    if spec.family == "swinv2":
        from timm.models.swin_transformer_v2 import checkpoint_filter_fn

        remapped = "layers.0.downsample.reduction.weight" in state
        state = checkpoint_filter_fn(state, backbone)
    classifier = tuple(sorted(k for k in state if k.startswith(_CLASSIFIER_PREFIXES)))
    state = {k: v for k, v in state.items() if k not in classifier}
    own = backbone.state_dict()
    # Non-persistent buffers (attention masks, index tables) are rebuilt by the model itself.
    missing = sorted(k for k in own if k not in state)
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise InitWeightsError(
            f"The init-weights file '{path}' lacks {len(missing)} of {len(own)} tensors of "
            f"'{name}' ({shown}); refusing to leave them at random initial values"
        )
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise InitWeightsError(
                f"Tensor '{key}' in '{path}' has shape {tuple(state[key].shape)}, '{name}' "
                f"needs {tuple(tensor.shape)}"
            )
    unexpected = tuple(sorted(k for k in state if k not in own))
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    return InitReport(str(path), len(own), classifier, unexpected, remapped)
