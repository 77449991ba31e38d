"""Errors of the PACS side; each names what was wrong. Standard library only (the CLI maps them)."""

from __future__ import annotations


class PacsError(Exception):
    """Something about a study in the PACS that the gateway cannot use (exit status 2)."""


class MarkError(PacsError, ValueError):
    """A lesion mark cannot be used; the message names the mark and the reason."""


class ReportError(PacsError, ValueError):
    """The prediction and the source images do not fit together (naming what differs)."""


class RecordNotFoundError(PacsError, LookupError):
    """No clinical record for a study (naming what was looked for and where)."""


class GatewayError(PacsError, RuntimeError):
    """The study cannot be predicted (naming the study and the reason)."""
