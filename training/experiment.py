"""The paper's experiment grid: crop methods x backbones (x clinical x auxiliary).

Every combination is trained with :func:`aln.training.trainer.train` and scored in process on all
splits; the comparison table gives AUC (95% CI) per split and DeLong's p-value of each
configuration against the best one (best = highest validation AUC, compared on the test split and
the external split, the same cases scored by both).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from aln.preprocessing.crop import CropMethod
from aln.training.cohort import Case
from aln.training.evaluate import Score, evaluate, score_checkpoint, write_predictions
from aln.training.metrics import delong_test
from aln.training.trainer import TrainConfig, train


def config_name(config: TrainConfig) -> str:
    """A short name: ``backbone/crop/clinical-on/aux-off``."""
    return (
        f"{config.backbone}/{config.crop.method}/clinical-{'on' if config.clinical else 'off'}"
        f"/aux-{'on' if config.auxiliary else 'off'}"
    )


def grid(
    base: TrainConfig,
    crops: list[CropMethod],
    backbones: list[str],
    clinical: list[bool],
    auxiliary: list[bool],
) -> list[TrainConfig]:
    """Every combination, other settings from ``base``."""
    return [
        replace(base, backbone=b, crop=replace(base.crop, method=c), clinical=k, auxiliary=a)
        for c, b, k, a in itertools.product(crops, backbones, clinical, auxiliary)
    ]


def run_grid(
    cases: list[Case], configs: list[TrainConfig], out: Path, cache_dir: Path
) -> dict[str, Any]:
    """Train and evaluate every configuration; write ``comparison.json``, ``.md`` and ``.png``."""
    out = Path(out)
    results: dict[str, dict[str, Any]] = {}
    scores: dict[str, list[Score]] = {}
    for config in configs:
        name = config_name(config)
        folder = out / "runs" / name.replace("/", "__")
        train(cases, config, folder / "checkpoint", cache_dir)
        scores[name] = score_checkpoint(cases, folder / "checkpoint", cache_dir)
        write_predictions(scores[name], folder / "predictions.csv")
        results[name] = evaluate(scores[name])
    best = max(results, key=lambda n: results[n]["splits"]["val"]["auc"] or -1)
    for name in results:
        results[name]["delong_vs_best"] = {}
        for split in ("test", "external"):
            if (
                split not in results[name]["splits"]
                or results[name]["splits"][split]["auc"] is None
            ):
                continue
            labels = [s.label for s in scores[name] if s.split == split]
            mine = [s.score for s in scores[name] if s.split == split]
            theirs = [s.score for s in scores[best] if s.split == split]
            results[name]["delong_vs_best"][split] = delong_test(labels, theirs, mine).p_value
    comparison = {"best": best, "chosen_by": "validation AUC", "configurations": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    (out / "comparison.md").write_text(comparison_table(comparison))
    plot_comparison(comparison, out / "comparison.png")
    return comparison


def comparison_table(comparison: dict[str, Any]) -> str:
    """Markdown: one row per configuration, AUC (95% CI) per split, DeLong p vs the best."""
    configurations = comparison["configurations"]
    splits = [
        s
        for s in ("train", "val", "test", "external")
        if any(s in r["splits"] for r in configurations.values())
    ]
    header = "| configuration | " + " | ".join(f"{s} AUC (95% CI)" for s in splits)
    header += " | p vs best (test) | p vs best (external) |"
    lines = [header, "|" + " --- |" * (len(splits) + 3)]
    for name, result in configurations.items():
        cells = []
        for split in splits:
            entry = result["splits"].get(split, {})
            cells.append(
                "n/a"
                if entry.get("auc") is None
                else f"{entry['auc']:.3f} ({entry['auc_ci_low']:.3f}–{entry['auc_ci_high']:.3f})"
            )
        p = result["delong_vs_best"]
        marker = " **(best)**" if name == comparison["best"] else ""
        lines.append(
            f"| {name}{marker} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(f"{p[s]:.3f}" if s in p else "n/a" for s in ("test", "external"))
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: dict[str, Any], path: Path) -> None:
    """AUC with 95% CI per configuration and split (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(comparison["configurations"])
    splits = ["val", "test", "external"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4.5))
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        aucs, lows, highs = [], [], []
        for name in names:
            entry = comparison["configurations"][name]["splits"].get(split, {})
            auc = entry.get("auc")
            aucs.append(np.nan if auc is None else auc)
            lows.append(0 if auc is None else auc - entry["auc_ci_low"])
            highs.append(0 if auc is None else entry["auc_ci_high"] - auc)
        ax.bar(
            np.arange(len(names)) + i * width,
            aucs,
            width,
            yerr=[lows, highs],
            capsize=3,
            label=split,
        )
    ax.axhline(0.5, color="k", linestyle="--", linewidth=0.8)
    ax.set_xticks(np.arange(len(names)) + width * (len(splits) - 1) / 2)
    ax.set_xticklabels([n.replace("/", "\n") for n in names], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUC (95% CI, DeLong)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
