"""Errors raised by :mod:`aln.serving`."""

from __future__ import annotations


class ServingError(RuntimeError):
    """Root of every error about starting, running or stopping the served ensemble."""


class ServerStartError(ServingError):
    """The server could not be started or made ready (the message says why; see its log)."""


class RepositoryError(ServingError):
    """A model repository that cannot be served (missing model, engine or manifest)."""


class EngineLoadError(ServingError):
    """An engine file that cannot be loaded here (missing, or built for another runtime)."""
