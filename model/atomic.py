"""Write a folder atomically: build it beside its destination, rename it into place.

Checkpoints, exports and model repositories are all written this way, so a failure (a parity
error, a full disk, Ctrl-C) never leaves a half-written folder where a server or a trainer would
read it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``out``, on failure it vanishes.

    Args:
        out: The destination folder (replaced when it exists).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a server under another user must read it
    try:
        yield staging
        backup = None
        if out.exists():
            backup = out.with_name(f".{out.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            out.rename(backup)
        staging.rename(out)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
