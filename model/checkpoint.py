"""Checkpoints: safetensors weights + a JSON manifest that is the model's interface.

A checkpoint folder holds ``weights.safetensors`` and ``manifest.json``. The manifest
(:class:`aln.preprocessing.manifest.Manifest`, parsed without torch) records everything the
server and the trainer must agree on; loading here adds what needs the network: the backbone's
embedding width, every weight's key and shape, and the weights' SHA-256, naming the key at fault.
Saving writes into a temporary sibling folder and renames it into place, so a failure never
leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aln.model.atomic import staged_directory
from aln.model.backbones import backbone_spec
from aln.model.errors import CheckpointError, ModelError
from aln.model.network import AlnNet
from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.crop import CropSpec
from aln.preprocessing.manifest import MANIFEST_FILE, UNTRAINED_DEMO, Manifest, read_manifest

WEIGHTS_FILE = "weights.safetensors"


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
        final = manifest.with_values(
            weights_sha256=file_sha256(weights),
            embedding_dim=net.fusion_head.embedding_dim,
            clinical_dim=net.fusion_head.clinical_dim,
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        (staging / MANIFEST_FILE).write_text(final.to_json())
    return final


def check_manifest(manifest: Manifest, source: str = "manifest") -> Manifest:
    """Check a manifest against this code's backbones (what the torch-free parser cannot know).

    Raises:
        CheckpointError: An unknown backbone, or an embedding width the backbone does not give.
    """
    try:
        spec = backbone_spec(manifest.backbone)
    except ModelError as exc:
        raise CheckpointError(f"Manifest {source}: {exc}") from exc
    if manifest.embedding_dim != spec.embedding_dim:
        raise CheckpointError(
            f"Manifest key 'embedding_dim' is {manifest.embedding_dim} but backbone "
            f"'{manifest.backbone}' gives {spec.embedding_dim}"
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
        ManifestError: The manifest is missing or malformed (naming the key).
        CheckpointError: Naming the missing file, the failed digest or the mismatched key.
    """
    folder = Path(folder)
    manifest = check_manifest(read_manifest(folder), str(folder / MANIFEST_FILE))
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
    if manifest.calibration is not None:
        net.fusion_head.set_calibration(manifest.calibration.slope, manifest.calibration.intercept)
    if manifest.operating_point is not None:
        net.fusion_head.set_threshold(manifest.operating_point.threshold)
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
        crop=CropSpec(),
        auxiliary=True,
        hidden_dim=net.fusion_head.hidden_dim,
        training=training,
    )
    return save_checkpoint(net, manifest, out)
