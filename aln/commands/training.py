"""``aln train``, ``aln evaluate`` and ``aln experiment``: the researcher's commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aln.commands import UsageError
from aln.commands.data import crop_arguments, crop_spec
from aln.model.backbones import BACKBONES, DEFAULT_BACKBONE
from aln.preprocessing.crop import CROP_METHODS
from aln.preprocessing.decision import DEFAULT_RULE, DEFAULT_TARGET_SENSITIVITY, RULES


def _on_off(text: str) -> list[bool]:
    values = {"on": True, "off": False}
    try:
        return [values[v.strip()] for v in text.split(",")]
    except KeyError:
        raise argparse.ArgumentTypeError(f"'{text}' must be on, off or on,off") from None


def _threshold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rule",
        choices=RULES,
        default=DEFAULT_RULE,
        help="how the operating threshold is chosen on the validation split",
    )
    parser.add_argument(
        "--target-sensitivity",
        type=float,
        default=DEFAULT_TARGET_SENSITIVITY,
        help="for --rule sensitivity: the highest threshold keeping at least this sensitivity",
    )


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="cohort manifest CSV")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument(
        "--calibration",
        choices=("platt", "temperature"),
        default="platt",
        help="logit-to-probability map fitted on the validation split after model selection",
    )
    _threshold_arguments(parser)
    parser.add_argument("--lr-backbone", type=float, default=1e-4)
    parser.add_argument("--lr-head", type=float, default=1e-3)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument(
        "--freeze-backbones",
        action="store_true",
        help="train the fusion head only (small cohorts, pretrained backbones)",
    )
    parser.add_argument("--init-weights", type=Path, help="local pretrained backbone weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--cache", type=Path, help="crop cache folder (default beside --out)")


def register(commands: Any) -> None:
    """Add the training subcommands to the ``aln`` parser."""
    train = commands.add_parser(
        "train",
        help="train on a cohort manifest and write a checkpoint",
        description="Train with the server's own preprocessing (crops cached by content hash); "
        "early stopping and model selection on the validation split.",
    )
    _training_arguments(train)
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    train.add_argument("--backbone", choices=tuple(BACKBONES), default=DEFAULT_BACKBONE)
    crop_arguments(train)
    train.add_argument("--auxiliary", action="store_true", help="use the auxiliary region")
    train.add_argument("--no-clinical", action="store_true", help="image-only model")
    train.add_argument("--clinical-schema", type=Path, help="clinical schema JSON (default v1)")
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="AUC with DeLong CI and p-values, operating point, calibration",
        description="Score a cohort in process (--checkpoint), through a running server (--url) "
        "or from a predictions CSV (--predictions: label, score, split) and write the same report.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--url", help="gRPC host:port of a running aln_ensemble")
    source.add_argument("--predictions", type=Path)
    evaluate.add_argument("--manifest", type=Path, help="cohort manifest (with --checkpoint/--url)")
    evaluate.add_argument("--auxiliary", action="store_true", help="send auxiliary regions (--url)")
    evaluate.add_argument("--no-clinical", action="store_true", help="send empty records (--url)")
    _threshold_arguments(evaluate)
    evaluate.add_argument("--out", type=Path, required=True, help="report folder")
    evaluate.add_argument("--title", default="aln model")
    evaluate.set_defaults(handler=run_evaluate)

    experiment = commands.add_parser(
        "experiment",
        help="the paper's grid: crops x backbones (x clinical x auxiliary)",
        description="Train and evaluate every combination; write a comparison table (AUC with "
        "CI per split, DeLong p against the best configuration) and a plot.",
    )
    _training_arguments(experiment)
    experiment.add_argument("--out", type=Path, required=True)
    experiment.add_argument(
        "--crops", default=",".join(CROP_METHODS), help="crop methods, comma-separated"
    )
    crop_arguments(experiment, method=False)
    experiment.add_argument("--backbones", default=DEFAULT_BACKBONE)
    experiment.add_argument("--clinical", type=_on_off, default=[True])
    experiment.add_argument("--auxiliary", type=_on_off, default=[False])
    experiment.set_defaults(handler=run_experiment)


def _config(args: argparse.Namespace, **overrides: Any) -> Any:
    from aln.training.trainer import TrainConfig

    return TrainConfig(
        crop=crop_spec(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        calibration=args.calibration,
        threshold_rule=args.rule,
        target_sensitivity=args.target_sensitivity,
        lr_backbone=args.lr_backbone,
        lr_head=args.lr_head,
        augment=not args.no_augment,
        freeze_backbones=args.freeze_backbones,
        seed=args.seed,
        init_weights=args.init_weights,
        threads=args.threads,
        **overrides,
    )


def run_train(args: argparse.Namespace) -> int:
    """Train one model."""
    from aln.preprocessing.clinical import ClinicalSchema
    from aln.training.cohort import read_cohort
    from aln.training.trainer import train

    config = _config(
        args,
        backbone=args.backbone,
        auxiliary=args.auxiliary,
        clinical=not args.no_clinical,
    )
    cases = read_cohort(args.manifest)
    cache = args.cache or args.out.parent / ".crop_cache"
    result = train(cases, config, args.out, cache, ClinicalSchema.load(args.clinical_schema))
    print(
        f"wrote {result.checkpoint}: best epoch {result.best_epoch} of {result.epochs_run}, "
        f"validation AUC {result.best_val_auc:.3f}"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Score and report."""
    from aln.training.cohort import read_cohort
    from aln.training.evaluate import (
        markdown_table,
        read_predictions,
        score_checkpoint,
        score_server,
        write_report,
    )

    if args.predictions:
        scores = read_predictions(args.predictions)
    else:
        if args.manifest is None:
            raise UsageError("--manifest is needed with --checkpoint or --url")
        cases = read_cohort(args.manifest)
        if args.checkpoint:
            scores = score_checkpoint(cases, args.checkpoint)
        else:
            scores = score_server(
                cases, args.url, auxiliary=args.auxiliary, clinical=not args.no_clinical
            )
    report = write_report(
        scores, args.out, args.title, rule=args.rule, target_sensitivity=args.target_sensitivity
    )
    print(markdown_table(report, args.title))
    print(f"wrote {args.out}/report.json, report.md, predictions.csv, roc_calibration.png")
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    """Run the grid."""
    from aln.training.cohort import read_cohort
    from aln.training.experiment import comparison_table, grid, run_grid

    base = _config(args)
    configs = grid(
        base, args.crops.split(","), args.backbones.split(","), args.clinical, args.auxiliary
    )
    comparison = run_grid(
        read_cohort(args.manifest), configs, args.out, args.cache or args.out / ".crop_cache"
    )
    print(comparison_table(comparison))
    print(
        f"best (validation AUC): {comparison['best']}; wrote {args.out}/comparison.json, "
        "comparison.md, comparison.png"
    )
    return 0
