"""Subcommands of ``aln``, grouped by the layer they drive; each module has ``register``.

Command modules load their layer lazily (inside the handler), so ``aln --help`` and the client
commands work in the client-only install.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Arguments that do not fit together (the command line answers exit status 2)."""
