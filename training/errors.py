"""Errors raised by :mod:`aln.training`."""

from __future__ import annotations


class CohortError(ValueError):
    """A cohort manifest row that cannot be used, naming the line and column."""
