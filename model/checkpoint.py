"""Checkpoints: safetensors weights + a JSON manifest that is the model's interface.

A checkpoint folder holds ``weights.safetensors`` and ``manifest.json``. The manifest records
everything the server and the trainer must agree on: format version, backbone, input size,
normalisation, crop method and size, the clinical schema, the fusion-head shape, the weights'
SHA-256 and a training summary (or the "untrained demo" mark). Loading checks all of it and
names the key at fault. Saving writes into a temporary sibling folder and renames it into place,
so a failure never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aln.model.atomic import staged_directory
from aln.model.backbones import backbone_spec
from aln.model.errors import CheckpointError, ModelError
from aln.model.network import AlnNet
from aln.preprocessing import contract
from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.crop import CropSpec
from aln.preprocessing.errors import PreprocessingError
from aln.preprocessing.serving import model_identity

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
UNTRAINED_DEMO = {
    "status": "untrained demo",
    "clinical_validity": "none: demo weights, never trained on patient data",
}


@dataclass(frozen=True)
class Manifest:
    """What a checkpoint promises about its model.

    Attributes:
        model_name: Name served as the model (e.g. ``aln_swinv2_tiny``).
        model_version: Version string of these weights.
        backbone: Backbone name (both branches).
        clinical_schema: The clinical schema (JSON form).
        crop: The crop spec (JSON form of :class:`~aln.preprocessing.crop.CropSpec`).
        hidden_dim: Fusion-head hidden width.
        training: Training summary, or :data:`UNTRAINED_DEMO`.
        weights_sha256: SHA-256 of the weights file (filled in on save).
        embedding_dim: Backbone embedding width (checked against the backbone).
        clinical_dim: Clinical vector width (checked against the schema).
        input_size: Crop side the backbones take.
        normalisation: ImageNet mean and std applied by the preprocessing.
        preprocessing_version: :data:`aln.preprocessing.contract.PREPROCESSING_VERSION`.
        format_version: Checkpoint format version.
        created_utc: ISO time of saving.
    """

    model_name: str
    model_version: str
    backbone: str
    clinical_schema: dict[str, Any]
    crop: dict[str, Any]
    hidden_dim: int
    training: dict[str, Any]
    weights_sha256: str = ""
    embedding_dim: int = 0
    clinical_dim: int = 0
    input_size: int = contract.IMAGE_SIZE
    normalisation: dict[str, list[float]] = field(
        default_factory=lambda: {
            "mean": list(contract.IMAGENET_MEAN),
            "std": list(contract.IMAGENET_STD),
        }
    )
    preprocessing_version: str = contract.PREPROCESSING_VERSION
    format_version: int = FORMAT_VERSION
    created_utc: str = ""

    @property
    def schema(self) -> ClinicalSchema:
        """The clinical schema as an object."""
        return ClinicalSchema.from_dict(self.clinical_schema)

    @property
    def crop_spec(self) -> CropSpec:
        """The crop spec as an object."""
        return CropSpec(**self.crop)

    def to_json(self) -> str:
        """Pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(net: AlnNet, manifest: Manifest, out: Path) -> Manifest:
    """Write ``net`` and ``manifest`` to the folder ``out`` atomically.

    Returns:
        The manifest as written (with digest, widths and time filled in).
    """
    with staged_directory(out) as staging:
        weights = staging / WEIGHTS_FILE
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(weights))
        final = Manifest(
            **{
                **asdict(manifest),
                "weights_sha256": file_sha256(weights),
                "embedding_dim": net.fusion_head.embedding_dim,
                "clinical_dim": net.fusion_head.clinical_dim,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
        (staging / MANIFEST_FILE).write_text(final.to_json())
    return final


def read_manifest(folder: Path) -> Manifest:
    """Read and check a checkpoint's manifest (not the weights).

    Raises:
        CheckpointError: Missing file, unknown format version, missing or inconsistent keys.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"The checkpoint '{folder}' has no {MANIFEST_FILE}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"Manifest key 'format_version' is {raw.get('format_version')!r}, this code reads "
            f"version {FORMAT_VERSION}"
        )
    known = set(Manifest.__dataclass_fields__)
    missing = sorted(k for k in known if k not in raw)
    if missing:
        raise CheckpointError(f"Manifest key '{missing[0]}' is missing from {path}")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CheckpointError(f"Manifest key '{unknown[0]}' in {path} is not known to this code")
    manifest = Manifest(**raw)
    try:
        spec = backbone_spec(manifest.backbone)
        schema = manifest.schema
        manifest.crop_spec  # noqa: B018 - validates the crop spec
    except (ModelError, PreprocessingError, TypeError) as exc:
        raise CheckpointError(f"Manifest {path}: {exc}") from exc
    if manifest.embedding_dim != spec.embedding_dim:
        raise CheckpointError(
            f"Manifest key 'embedding_dim' is {manifest.embedding_dim} but backbone "
            f"'{manifest.backbone}' gives {spec.embedding_dim}"
        )
    if manifest.clinical_dim != schema.width:
        raise CheckpointError(
            f"Manifest key 'clinical_dim' is {manifest.clinical_dim} but the clinical schema "
            f"{schema.name} {schema.version} encodes {schema.width} values"
        )
    if manifest.input_size != contract.IMAGE_SIZE:
        raise CheckpointError(
            f"Manifest key 'input_size' is {manifest.input_size}, this code serves "
            f"{contract.IMAGE_SIZE}"
        )
    return manifest


def load_checkpoint(folder: Path, *, verify_digest: bool = True) -> tuple[AlnNet, Manifest]:
    """Load a checkpoint and check it against its manifest and the code.

    Args:
        folder: The checkpoint folder.
        verify_digest: Check the weights' SHA-256 against the manifest.

    Returns:
        The network in eval mode and its manifest.

    Raises:
        CheckpointError: Naming the missing file, the failed digest or the mismatched key.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"The checkpoint '{folder}' has no {WEIGHTS_FILE}")
    if verify_digest:
        digest = file_sha256(weights)
        if digest != manifest.weights_sha256:
            raise CheckpointError(
                f"{weights} has SHA-256 {digest[:16]}..., the manifest key 'weights_sha256' "
                f"says {manifest.weights_sha256[:16]}...: the weights were changed or corrupted"
            )
    net = AlnNet(manifest.backbone, manifest.clinical_dim, manifest.hidden_dim)
    state = load_file(str(weights))
    expected = net.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"Weight '{key}' is missing from {weights}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"Weight '{key}' has shape {tuple(state[key].shape)}, the model needs "
                f"{tuple(tensor.shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"Weight '{extra[0]}' in {weights} is not part of the model")
    net.load_state_dict(state, strict=True)
    return net.eval(), manifest


def new_demo_checkpoint(
    out: Path,
    backbone: str,
    seed: int = 0,
    schema: ClinicalSchema | None = None,
    init_weights: Path | None = None,
) -> Manifest:
    """Write a seeded demo checkpoint (no clinical validity).

    Args:
        out: Checkpoint folder to write.
        backbone: Backbone name.
        seed: Seed of the random initialisation.
        schema: Clinical schema (default v1).
        init_weights: Pretrained backbone weights (local file) for both branches; the fusion
            head stays random.
    """
    from aln.model.pretrained import load_init_weights

    backbone_spec(backbone)
    schema = schema or ClinicalSchema.load()
    torch.manual_seed(seed)
    net = AlnNet(backbone, schema.width)
    training: dict[str, Any] = {**UNTRAINED_DEMO, "seed": seed}
    if init_weights is not None:
        reports = [
            load_init_weights(branch, backbone, init_weights)
            for branch in (net.backbone_primary, net.backbone_auxiliary)
        ]
        training["init_weights"] = {**asdict(reports[0]), "sha256": file_sha256(init_weights)}
    manifest = Manifest(
        model_name=f"aln_{backbone}",
        model_version=f"demo-seed{seed}",
        backbone=backbone,
        clinical_schema=schema.to_dict(),
        crop=asdict(CropSpec()),
        hidden_dim=net.fusion_head.hidden_dim,
        training=training,
    )
    return save_checkpoint(net, manifest, out)


def model_info(manifest: Manifest) -> dict[str, str]:
    """The model fields every answer's provenance carries (the served model's, exactly)."""
    return model_identity(asdict(manifest))
