"""The decision a served answer carries: the operating point and what its output values mean.

A trained, calibrated checkpoint stores an :class:`OperatingPoint` in its manifest: the
threshold on the calibrated probability chosen on the validation split (by default the highest
threshold that keeps sensitivity at or above 0.9: a missed positive node is the costly error),
with the sensitivity, specificity, PPV and NPV it had there, each with its Wilson 95% interval.
The fusion head compares every probability with that threshold and answers a decision code
(:data:`LIKELY_POSITIVE`, :data:`LOW_RISK`, or :data:`UNAVAILABLE` when the model has no
operating point: demo weights and uncalibrated checkpoints never get a made-up threshold). The
served ensemble's configuration carries the operating point as JSON (:data:`PARAMETER`,
:func:`parameter_text`), so a client reads the validated figures without the checkpoint.

Standard library only: the client-only install imports this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

from aln.preprocessing.errors import ManifestError

RULES = ("sensitivity", "youden")
"""How the threshold is chosen on the validation split
(:func:`aln.training.metrics.choose_threshold`)."""
DEFAULT_RULE = "sensitivity"
DEFAULT_TARGET_SENSITIVITY = 0.9
PARAMETER = "operating_point"
"""The ``parameters`` entry of the ensemble's config holding :func:`parameter_text`."""

LIKELY_POSITIVE = 1
"""Decision code: probability at or above the threshold (nodes likely still positive)."""
LOW_RISK = 0
"""Decision code: below the threshold (low risk of positive nodes at this operating point)."""
UNAVAILABLE = -1
"""Decision code: the model has no operating point (demo or uncalibrated weights)."""


class Decision(str, Enum):
    """The served decision, as the SDK reports it."""

    LIKELY_POSITIVE = "likely_positive"
    LOW_RISK = "low_risk"
    UNAVAILABLE = "unavailable"

    @classmethod
    def from_code(cls, code: int) -> Decision:
        """The decision of a served decision code.

        Raises:
            ValueError: Not one of the three codes.
        """
        try:
            return _CODES[int(code)]
        except KeyError:
            raise ValueError(
                f"A decision code of {code} is invalid, it must be {LIKELY_POSITIVE}, "
                f"{LOW_RISK} or {UNAVAILABLE}"
            ) from None


_CODES = {
    LIKELY_POSITIVE: Decision.LIKELY_POSITIVE,
    LOW_RISK: Decision.LOW_RISK,
    UNAVAILABLE: Decision.UNAVAILABLE,
}


@dataclass(frozen=True)
class Proportion:
    """A proportion on the validation split with its Wilson 95% interval.

    ``value`` and the bounds are None when the proportion has no cases (e.g. PPV when no case
    was called positive).
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    successes: int
    total: int


FIGURES = ("sensitivity", "specificity", "ppv", "npv")
"""The validated figures an operating point carries."""


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold on the calibrated probability and what it achieved on validation data.

    Attributes:
        rule: One of :data:`RULES`.
        target_sensitivity: The sensitivity asked for (rule ``sensitivity``), else None.
        threshold: Calibrated probability at or above which the answer is
            :data:`LIKELY_POSITIVE`; in (0, 1].
        chosen_on: The split it was chosen on.
        cases: Cases on that split.
        prevalence: Fraction of positive cases there (PPV and NPV depend on it).
        sensitivity: TP / (TP + FN).
        specificity: TN / (TN + FP).
        ppv: TP / (TP + FP).
        npv: TN / (TN + FN).
    """

    rule: str
    target_sensitivity: float | None
    threshold: float
    chosen_on: str
    cases: int
    prevalence: float
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion

    def decide(self, probability: float) -> Decision:
        """The decision for one calibrated probability (as the fusion head computes it)."""
        return Decision.LIKELY_POSITIVE if probability >= self.threshold else Decision.LOW_RISK

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (manifest and served configuration)."""
        return asdict(self)

    @classmethod
    def from_dict(
        cls, raw: object, source: str, key: str = "operating_point"
    ) -> OperatingPoint | None:
        """Check and build from the JSON form (None: no operating point).

        Args:
            raw: The parsed JSON.
            source: Where it came from (a path or a model name), for messages.
            key: The key it was read from, prefixed to each field in messages.

        Raises:
            ManifestError: Naming the field (``operating_point.threshold``, ...) and what it
                must be.
        """
        if raw is None:
            return None
        names = [f.name for f in fields(cls)]
        if not isinstance(raw, dict) or set(raw) != set(names):
            raise ManifestError(
                f"Manifest key '{key}' in {source} is {raw!r}, it must be null or an object with "
                f"{', '.join(names)}"
            )

        def fail(field: str, value: object, must: str) -> ManifestError:
            return ManifestError(
                f"Manifest key '{key}.{field}' in {source} is {value!r}, it must be {must}"
            )

        if raw["rule"] not in RULES:
            raise fail("rule", raw["rule"], f"one of {', '.join(RULES)}")
        target = raw["target_sensitivity"]
        if raw["rule"] == "sensitivity":
            if not _is_fraction(target) or target == 0:
                raise fail("target_sensitivity", target, "a number in (0, 1] for rule sensitivity")
        elif target is not None:
            raise fail("target_sensitivity", target, "null for rule youden")
        if not _is_fraction(raw["threshold"]) or raw["threshold"] == 0:
            raise fail("threshold", raw["threshold"], "a calibrated probability in (0, 1]")
        if not isinstance(raw["chosen_on"], str) or not raw["chosen_on"]:
            raise fail("chosen_on", raw["chosen_on"], "a split name")
        if not _is_count(raw["cases"]) or raw["cases"] < 2:
            raise fail("cases", raw["cases"], "an integer of at least 2")
        if not _is_fraction(raw["prevalence"]):
            raise fail("prevalence", raw["prevalence"], "a number in [0, 1]")
        figures = {name: _proportion(raw[name], f"{key}.{name}", source) for name in FIGURES}
        return cls(
            rule=raw["rule"],
            target_sensitivity=None if target is None else float(target),
            threshold=float(raw["threshold"]),
            chosen_on=raw["chosen_on"],
            cases=raw["cases"],
            prevalence=float(raw["prevalence"]),
            **figures,
        )


def parameter_text(model_version: str, point: OperatingPoint | None) -> str:
    """The ensemble config's :data:`PARAMETER` value: the served version and its operating point.

    The version lets a client match the figures with the answers (whose provenance names the
    version that computed them) across a model reload.
    """
    published = None if point is None else point.to_dict()
    return json.dumps({"model_version": model_version, "operating_point": published})


def from_parameter(text: str, model: str) -> tuple[str, OperatingPoint | None]:
    """Read the ensemble config's :data:`PARAMETER` back: ``(model version, operating point)``.

    Raises:
        ManifestError: Not JSON of that form, or an invalid operating point (naming the field).
    """
    source = f"the configuration of model {model}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"Parameter '{PARAMETER}' of {source} is not valid JSON: {exc}"
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("model_version"), str):
        raise ManifestError(
            f"Parameter '{PARAMETER}' of {source} is {text!r}, it must be an object with "
            "model_version and operating_point"
        )
    return raw["model_version"], OperatingPoint.from_dict(raw.get("operating_point"), source)


def _is_fraction(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _proportion(raw: object, key: str, source: str) -> Proportion:
    names = [f.name for f in fields(Proportion)]
    if not isinstance(raw, dict) or set(raw) != set(names):
        raise ManifestError(
            f"Manifest key '{key}' in {source} is {raw!r}, it must be an object with "
            f"{', '.join(names)}"
        )
    for name in ("successes", "total"):
        if not _is_count(raw[name]):
            raise ManifestError(
                f"Manifest key '{key}.{name}' in {source} is {raw[name]!r}, it must be a "
                "count (an integer of 0 or more)"
            )
    if raw["successes"] > raw["total"]:
        raise ManifestError(
            f"Manifest key '{key}.successes' in {source} is {raw['successes']}, more than its "
            f"total {raw['total']}"
        )
    values = [raw["value"], raw["ci_low"], raw["ci_high"]]
    if raw["total"] == 0:
        if any(v is not None for v in values):
            raise ManifestError(
                f"Manifest key '{key}' in {source} has no cases (total 0), so its value and "
                "interval must be null"
            )
        return Proportion(None, None, None, 0, 0)
    for name, value in zip(("value", "ci_low", "ci_high"), values, strict=True):
        if not _is_fraction(value):
            raise ManifestError(
                f"Manifest key '{key}.{name}' in {source} is {value!r}, it must be a number "
                "in [0, 1]"
            )
    low, value, high = float(raw["ci_low"]), float(raw["value"]), float(raw["ci_high"])
    if not low <= value <= high:
        raise ManifestError(
            f"Manifest key '{key}' in {source} has ci_low {low}, value {value}, ci_high {high}; "
            "they must be in that order"
        )
    return Proportion(value, low, high, raw["successes"], raw["total"])
