"""Errors every layer may raise that are about the installation, not the input.

This module imports nothing, so the client-only install and every layer can raise and catch
these. The ``aln`` command line answers them with their own exit status
(:data:`aln.cli.EXIT_MISSING_COMPONENT`), distinct from bad input.
"""

from __future__ import annotations


class MissingComponentError(RuntimeError):
    """An optional component this command needs is not installed or not available here.

    The message names the component and how to get it (``pip install 'aln-triton[serve]'``, a
    GPU with TensorRT, ...).

    Attributes:
        component: What is missing (``"nvidia-pytriton"``, ``"TensorRT"``, ``"torch"``).
    """

    def __init__(self, message: str, component: str) -> None:
        super().__init__(message)
        self.component = component
