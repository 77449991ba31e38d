"""Subcommands of ``aln``, grouped by the layer they drive; each module has ``register``."""
