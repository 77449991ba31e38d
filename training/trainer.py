"""Train the network on a cohort and write a checkpoint in the served format.

Class-balanced loss (``pos_weight`` = negatives / positives), scale-preserving augmentation,
evaluation on the validation split after every epoch, early stopping on validation AUC and
selection of the best epoch, seeded and deterministic on the CPU, a progress bar, a per-epoch
log (CSV and JSON) and a checkpoint whose manifest carries the training summary.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from aln.model.backbones import DEFAULT_BACKBONE
from aln.model.checkpoint import save_checkpoint
from aln.model.network import AlnNet
from aln.model.pretrained import load_init_weights
from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.crop import CropSpec, normalise
from aln.preprocessing.decision import DEFAULT_RULE, DEFAULT_TARGET_SENSITIVITY
from aln.preprocessing.manifest import Manifest
from aln.training.augment import augment
from aln.training.calibration import fit_calibration
from aln.training.cohort import Case
from aln.training.dataset import CaseInputs, CropCache, load_case
from aln.training.metrics import delong_auc
from aln.training.operating_point import choose_operating_point


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how.

    Attributes:
        backbone: Backbone name.
        crop: The crop spec (method and size).
        clinical: Use the clinical branch (off: an empty schema, the head sees no clinical data).
        auxiliary: Use the auxiliary-region branch.
        epochs: Most epochs.
        batch_size: Cases per step.
        lr_backbone: Learning rate of the backbones.
        lr_head: Learning rate of the fusion head.
        weight_decay: AdamW weight decay.
        patience: Epochs without a better validation AUC before stopping.
        augment: Use augmentation.
        freeze_backbones: Train only the fusion head (fast; for small cohorts with pretrained
            backbones).
        seed: Seed of everything random.
        init_weights: Local pretrained backbone weights.
        threads: torch CPU threads.
        model_name: Served model name (default ``aln_<backbone>``).
        calibration: How the logit is mapped to a probability after model selection, fitted on
            the validation split (:func:`aln.training.calibration.fit_calibration`): ``platt``
            or ``temperature``.
        threshold_rule: How the served operating point is chosen on the calibrated validation
            probabilities: ``sensitivity`` (the highest threshold reaching
            ``target_sensitivity``) or ``youden``.
        target_sensitivity: For ``threshold_rule="sensitivity"``.
    """

    backbone: str = DEFAULT_BACKBONE
    crop: CropSpec = field(default_factory=CropSpec)
    clinical: bool = True
    auxiliary: bool = False
    epochs: int = 20
    batch_size: int = 8
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    augment: bool = True
    freeze_backbones: bool = False
    seed: int = 0
    init_weights: Path | None = None
    threads: int | None = None
    model_name: str | None = None
    calibration: str = "platt"
    threshold_rule: str = DEFAULT_RULE
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced.

    Attributes:
        checkpoint: The checkpoint folder written.
        best_epoch: The epoch selected on validation AUC (1-based).
        epochs_run: Epochs run before early stopping.
        best_val_auc: Validation AUC of the selected epoch.
        crop_cache_hits: Crops read from the content-addressed cache.
        crop_cache_misses: Crops computed by the preprocessing.
        summary: The JSON summary stored in the manifest's ``training`` and ``training_log.json``.
    """

    checkpoint: Path
    best_epoch: int
    epochs_run: int
    best_val_auc: float
    crop_cache_hits: int
    crop_cache_misses: int
    summary: dict[str, Any]


@dataclass
class Prepared:
    """A split's inputs as arrays."""

    primary: npt.NDArray[np.float32]
    auxiliary: npt.NDArray[np.float32]
    present: npt.NDArray[np.float32]
    clinical: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float32]


def _stack(inputs: list[CaseInputs], size: int, clinical_dim: int) -> Prepared:
    n = len(inputs)
    primary = np.stack([x.primary for x in inputs]) if n else np.zeros((0, size, size), np.float32)
    auxiliary = np.zeros((n, size, size), np.float32)
    present = np.zeros((n, 1), np.float32)
    for i, x in enumerate(inputs):
        if x.auxiliary is not None:
            auxiliary[i], present[i] = x.auxiliary, 1.0
    clinical = (
        np.stack([x.clinical for x in inputs]) if n else np.zeros((0, clinical_dim), np.float32)
    ).reshape(n, clinical_dim)
    return Prepared(
        primary, auxiliary, present, clinical, np.array([x.label for x in inputs], dtype=np.float32)
    )


def _tensors(
    data: Prepared, index: npt.NDArray[np.int64], rng: np.random.Generator | None
) -> tuple[torch.Tensor, ...]:
    def images(greys: npt.NDArray[np.float32], present: npt.NDArray[np.float32]) -> torch.Tensor:
        out = []
        for grey, on in zip(greys, present, strict=True):
            if not on:  # an absent image is all zeros, as the server sends it
                out.append(np.zeros((3, *grey.shape), np.float32))
                continue
            out.append(normalise(augment(grey, rng) if rng is not None else grey))
        return torch.from_numpy(np.stack(out))

    ones = np.ones((len(index), 1), np.float32)
    return (
        images(data.primary[index], ones),
        images(data.auxiliary[index], data.present[index]),
        torch.from_numpy(data.present[index]),
        torch.from_numpy(data.clinical[index]),
        torch.from_numpy(data.labels[index][:, None]),
    )


@torch.inference_mode()
def predict_outputs(
    net: AlnNet, data: Prepared, batch_size: int = 16
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(raw logits, probabilities)`` for prepared inputs (no augmentation), float64 (n,)."""
    net.eval()
    logits, probabilities = [], []
    for start in range(0, len(data.labels), batch_size):
        index = np.arange(start, min(start + batch_size, len(data.labels)))
        primary, auxiliary, present, clinical, _ = _tensors(data, index, None)
        logit, probability, _ = net(primary, auxiliary, present, clinical)
        logits.append(logit.numpy().reshape(-1))
        probabilities.append(probability.numpy().reshape(-1))
    if not logits:
        return np.zeros(0), np.zeros(0)
    return (
        np.concatenate(logits).astype(np.float64),
        np.concatenate(probabilities).astype(np.float64),
    )


def predict_prepared(net: AlnNet, data: Prepared, batch_size: int = 16) -> npt.NDArray[np.float64]:
    """Probabilities for prepared inputs (no augmentation), float64 (n,)."""
    return predict_outputs(net, data, batch_size)[1]


def prepare(
    cases: list[Case],
    cache: CropCache,
    schema: ClinicalSchema,
    auxiliary: bool,
    desc: str = "preprocessing",
) -> Prepared:
    """Preprocess (through the cache) and stack a list of cases."""
    inputs = [
        load_case(c, cache, schema, auxiliary)
        for c in tqdm(cases, desc=desc, leave=False, disable=None)
    ]
    return _stack(inputs, cache.spec.output_size, schema.width)


def train(
    cases: list[Case],
    config: TrainConfig,
    out: Path,
    cache_dir: Path,
    schema: ClinicalSchema | None = None,
) -> TrainResult:
    """Train, select the best validation epoch and write the checkpoint to ``out``.

    Returns:
        The result; its summary is also in the checkpoint manifest and ``training_log.json``.

    Raises:
        ValueError: No training or validation cases, or a single class in either.
        PreprocessingError: A case that cannot be preprocessed (named).
    """
    schema = schema or ClinicalSchema.load()
    if not config.clinical:
        schema = ClinicalSchema(f"{schema.name}-none", schema.version, ())
    train_cases = [c for c in cases if c.split == "train"]
    val_cases = [c for c in cases if c.split == "val"]
    for name, subset in (("train", train_cases), ("val", val_cases)):
        present_labels = {c.label for c in subset}
        if present_labels != {0, 1}:
            raise ValueError(
                f"The '{name}' split needs positive and negative cases, it has "
                f"{len(subset)} cases with labels {sorted(present_labels)}"
            )
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)

    cache = CropCache(cache_dir, config.crop)
    train_data = prepare(train_cases, cache, schema, config.auxiliary, "preprocessing train")
    val_data = prepare(val_cases, cache, schema, config.auxiliary, "preprocessing val")

    net = AlnNet(config.backbone, schema.width)
    init_report = None
    if config.init_weights is not None:
        reports = [
            load_init_weights(b, config.backbone, config.init_weights)
            for b in (net.backbone_primary, net.backbone_auxiliary)
        ]
        init_report = asdict(reports[0])
    backbone_params = [*net.backbone_primary.parameters(), *net.backbone_auxiliary.parameters()]
    if config.freeze_backbones:
        for p in backbone_params:
            p.requires_grad_(False)
    groups = [{"params": net.fusion_head.parameters(), "lr": config.lr_head}]
    if not config.freeze_backbones:
        groups.append({"params": backbone_params, "lr": config.lr_backbone})
    optimiser = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    positives = float(train_data.labels.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor([(len(train_data.labels) - positives) / positives])
    )

    history: list[dict[str, float]] = []
    best_auc, best_epoch, best_state, stale = -1.0, 0, None, 0
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        net.train()
        if config.freeze_backbones:
            net.backbone_primary.eval()
            net.backbone_auxiliary.eval()
        order = rng.permutation(len(train_data.labels))
        losses = []
        bar = tqdm(
            range(0, len(order), config.batch_size),
            desc=f"epoch {epoch}",
            leave=False,
            disable=None,
        )
        for begin in bar:
            index = order[begin : begin + config.batch_size]
            primary, auxiliary, present, clinical, labels = _tensors(
                train_data, index, rng if config.augment else None
            )
            logit, _, _ = net(primary, auxiliary, present, clinical)
            loss = loss_fn(logit, labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss))
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        val_scores = predict_prepared(net, val_data)
        val_auc = delong_auc(val_data.labels, val_scores).auc
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_auc": val_auc,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        tqdm.write(f"epoch {epoch}: train loss {record['train_loss']:.4f}, val AUC {val_auc:.3f}")
        if val_auc > best_auc:
            best_auc, best_epoch, stale = val_auc, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    assert best_state is not None
    net.load_state_dict(best_state)
    # Calibration after model selection, on the same validation split (AUC is unchanged by it).
    val_logits, _ = predict_outputs(net, val_data)
    calibration = fit_calibration(val_logits, val_data.labels, config.calibration, "val")
    net.fusion_head.set_calibration(calibration.slope, calibration.intercept)
    _, val_probabilities = predict_outputs(net, val_data)
    point = choose_operating_point(
        val_data.labels, val_probabilities, config.threshold_rule, config.target_sensitivity
    )
    net.fusion_head.set_threshold(point.threshold)

    summary: dict[str, Any] = {
        "status": "trained",
        "clinical_validity": "as validated by the user on their own cohort",
        "config": {
            **asdict(config),
            "crop": asdict(config.crop),
            "init_weights": str(config.init_weights) if config.init_weights else None,
        },
        "cases": {
            split: sum(c.split == split for c in cases)
            for split in ("train", "val", "test", "external")
        },
        "positives_train": int(positives),
        "best_epoch": best_epoch,
        "best_val_auc": best_auc,
        "epochs_run": len(history),
        "init_weights": init_report,
        "crop_cache": {"hits": cache.hits, "misses": cache.misses},
    }
    manifest = Manifest(
        model_name=config.model_name or f"aln_{config.backbone}",
        model_version=time.strftime("trained-%Y%m%dT%H%M%S", time.gmtime()),
        backbone=config.backbone,
        clinical_schema=schema.to_dict(),
        crop=config.crop,
        auxiliary=config.auxiliary,
        hidden_dim=net.fusion_head.hidden_dim,
        training=summary,
        calibration=calibration,
        operating_point=point,
    )
    save_checkpoint(net, manifest, out)
    _write_log(Path(out), history, summary)
    return TrainResult(
        Path(out), best_epoch, len(history), best_auc, cache.hits, cache.misses, summary
    )


def _write_log(out: Path, history: list[dict[str, float]], summary: dict[str, Any]) -> None:
    with (out / "training_log.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    (out / "training_log.json").write_text(
        json.dumps({"history": history, "summary": summary}, indent=2, default=str) + "\n"
    )
