"""Errors raised by :mod:`aln.model`."""

from __future__ import annotations


class ModelError(ValueError):
    """Root of every error about a model, checkpoint or weights file."""


class CheckpointError(ModelError):
    """A checkpoint that is missing a file, fails its digest, or disagrees with the code."""


class InitWeightsError(ModelError):
    """A pretrained-weights file that cannot initialise a backbone completely."""
