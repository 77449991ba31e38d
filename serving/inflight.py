"""What each model instance is working on, readable after its process has died.

A native decoder that crashes on a hostile file takes its Python-backend stub with it, and with
the stub whatever it knew about the request. So each model instance keeps a *marker*: a small file
of its own, named after the instance, in a folder on tmpfs that outlives the process. The instance
writes the request ids of a batch into it before working on the batch and blanks it afterwards
(one ``pwrite`` each, a few microseconds); after a crash the supervisor reads the dead instance's
marker and logs the ids (:class:`aln.serving.supervisor.StubSupervisor`).

The ids are the callers' request ids: the SDK sends a random one per call
(:func:`aln.client._request.new_request_id`), never anything about the patient. What a marker holds
is cleaned of anything but printable ASCII and cut to :data:`MARKER_BYTES`.

A request that was being decoded when ``preprocess`` crashed is *quarantined*: the supervisor adds
its id to the folder's :data:`QUARANTINE_FILE`, and ``preprocess`` refuses that id from then on
(INVALID_ARGUMENT, naming the crash) instead of handing the same hostile file to the native decoder
again on each retry of the SDK. A caller who believes the crash was not the study's fault sends it
again under a new id (a new SDK call does).

The folder is named by the environment variable :data:`FOLDER_VARIABLE`, which ``aln serve`` sets
for tritonserver (and so for its stubs) when it supervises them; without it, nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

FOLDER_VARIABLE = "ALN_INFLIGHT_DIR"
"""Environment variable naming the folder of the markers."""
MARKER_BYTES = 1024
"""Size of a marker: the ids of one batch, separated by spaces, cut to fit."""
QUARANTINE_FILE = "quarantined"
"""The folder's list of quarantined request ids: one ``id<TAB>cause`` line each."""
NO_ID = "(none)"
"""How a request sent without an id is written (Triton's id is empty then)."""
_UNSAFE = re.compile(r"[^\x21-\x7e]")


def clean(request_id: str) -> str:
    """A request id as a marker and a log line may carry it: printable ASCII, at most 64 long."""
    return _UNSAFE.sub("?", request_id)[:64] or NO_ID


class Marker:
    """One model instance's marker.

    Args:
        path: The marker file (created, or emptied when a reloaded instance takes it over).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._write("")

    @classmethod
    def for_instance(cls, instance: str) -> Marker | None:
        """The marker of ``instance`` in the folder :data:`FOLDER_VARIABLE` names, or None."""
        folder = os.environ.get(FOLDER_VARIABLE)
        return cls(Path(folder) / instance) if folder else None

    @contextlib.contextmanager
    def working_on(self, request_ids: Sequence[str]) -> Iterator[None]:
        """Record ``request_ids`` for the duration of the block."""
        self._write(" ".join(clean(i) for i in request_ids))
        try:
            yield
        finally:
            self._write("")

    def _write(self, text: str) -> None:
        data = text.encode("ascii")[:MARKER_BYTES]
        os.pwrite(self._fd, data.ljust(MARKER_BYTES, b"\0"), 0)


def working_on(
    marker: Marker | None, request_ids: Sequence[str]
) -> contextlib.AbstractContextManager[None]:
    """``marker.working_on(request_ids)``, or nothing when there is no marker."""
    return marker.working_on(request_ids) if marker is not None else contextlib.nullcontext()


def read(folder: Path, instance: str) -> list[str]:
    """The request ids the marker of ``instance`` holds now (empty: idle or no marker)."""
    try:
        raw = (Path(folder) / instance).read_bytes()
    except OSError:
        return []
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace").split()


class Quarantine:
    """The request ids that were being decoded when a ``preprocess`` instance crashed.

    Args:
        folder: The markers' folder (the list is :data:`QUARANTINE_FILE` in it).
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / QUARANTINE_FILE
        self._seen: tuple[int, int] | None = None
        self._causes: dict[str, str] = {}

    @classmethod
    def from_environment(cls) -> Quarantine | None:
        """The quarantine of the folder :data:`FOLDER_VARIABLE` names, or None."""
        folder = os.environ.get(FOLDER_VARIABLE)
        return cls(Path(folder)) if folder else None

    def add(self, request_ids: Sequence[str], cause: str) -> None:
        """Quarantine ``request_ids`` (requests sent without an id are never quarantined)."""
        kept = [clean(i) for i in request_ids if clean(i) != NO_ID]
        if kept:
            with self.path.open("a", encoding="ascii", errors="replace") as out:
                out.writelines(f"{i}\t{cause}\n" for i in kept)

    def cause(self, request_id: str) -> str | None:
        """Why ``request_id`` is quarantined (the crash it was in), or None if it is not.

        The list is read again only when the file changed (one ``stat`` per call otherwise).
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        if self._seen != (stat.st_mtime_ns, stat.st_size):
            lines = self.path.read_text(encoding="ascii", errors="replace").splitlines()
            self._causes = dict(line.split("\t", 1) for line in lines if "\t" in line)
            self._seen = (stat.st_mtime_ns, stat.st_size)
        return self._causes.get(clean(request_id))
