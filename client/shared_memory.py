"""Triton system shared memory for a caller on the server's host.

Over plain gRPC a 26 MB study is serialised into protobuf by the caller, parsed again by the server
and copied once more on its way to the ``preprocess`` model. A caller on the same host (an
integration service on the inference node) can instead write the DICOM bytes into a POSIX
shared-memory region that the server has mapped, and name the region in the request: the bytes
never cross gRPC. Across a network this cannot work (the server cannot open a region of another
host), and the clients fall back to gRPC bytes with a warning.

The rules that keep it safe:

- One region per request in flight, never two requests writing one region: a
  :class:`RegionPool` lends each request a region of its own and takes it back when the answer
  is in, so regions are reused across calls and their count is the peak concurrency.
- Regions are sized to the largest study seen (rounded up to :data:`GRANULE`); a region smaller
  than a later, larger study is retired when it comes back, not grown in place while the server
  may be reading it.
- Every region is unregistered and unlinked on ``close()`` and, for a client that was never
  closed, at interpreter exit (:func:`release_at_exit`). A process killed outright cannot clean
  up; its regions carry its host, pid and process start time in their names, and the next client
  on the same host unregisters and unlinks every region whose owner is gone
  (:func:`stale_regions`) before it registers its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any

import numpy as np

PREFIX = "aln"
"""Every region the SDK creates is named ``aln_<host>_<pid>_<start>_<token>_<serial>``."""
GRANULE = 1 << 20
"""Region sizes are rounded up to whole MiB, so studies of similar size share regions."""
ALIGNMENT = 64
"""Each input starts on a cache-line boundary inside its region."""


class SharedMemoryFallbackWarning(RuntimeWarning):
    """The server could not map this client's region (another host): gRPC bytes are used."""


def _aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to :data:`ALIGNMENT`."""
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc``), None if gone.

    With the pid it tells a live owner from an unrelated process that reused the pid.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def stale_regions(registered: Iterable[str]) -> list[str]:
    """Names among ``registered`` that this SDK created on this host for processes now gone.

    Regions of other hosts (another container sharing the server's IPC namespace) and of live
    processes are never included, nor names the SDK did not make.
    """
    host = _host_tag()
    stale = []
    for name in registered:
        parts = name.split("_")
        if len(parts) != 6 or parts[0] != PREFIX or parts[1] != host or not parts[2].isdigit():
            continue
        if process_start(int(parts[2])) != parts[3]:
            stale.append(name)
    return stale


def unlink(name: str) -> None:
    """Remove the POSIX shared-memory object of a region, if it still exists (best effort)."""
    with contextlib.suppress(OSError):
        os.unlink(f"/dev/shm/{name}")


@dataclass(frozen=True)
class Placement:
    """Where one input's bytes lie: the region's name, the offset and the size in bytes."""

    region: str
    offset: int
    size: int


class Region:
    """One POSIX shared-memory region, created and mapped by this process.

    Its Triton name and its key are the same string (the key with a leading ``/``).

    Args:
        name: The region's name.
        size: Bytes to allocate.
    """

    def __init__(self, name: str, size: int) -> None:
        import tritonclient.utils.shared_memory as shm

        self.name = name
        self.key = f"/{name}"
        self.size = size
        self._handle = shm.create_shared_memory_region(name, self.key, size, create_only=True)

    def write(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, Placement]:
        """Copy each array into the region, one after another, each on :data:`ALIGNMENT`.

        Raises:
            ValueError: The arrays do not fit (the pool sizes regions so that they do).
        """
        import tritonclient.utils.shared_memory as shm

        placements = {}
        offset = 0
        for name, array in arrays.items():
            if offset + array.nbytes > self.size:
                raise ValueError(
                    f"{array.nbytes} bytes at offset {offset} do not fit region '{self.name}' "
                    f"of {self.size} bytes"
                )
            shm.set_shared_memory_region(self._handle, [array], offset=offset)
            placements[name] = Placement(self.name, offset, array.nbytes)
            offset += _aligned(array.nbytes)
        return placements

    def destroy(self) -> None:
        """Unmap and unlink the region (the server's own mapping stays valid until unregistered)."""
        import tritonclient.utils.shared_memory as shm

        if self._handle is not None:
            with contextlib.suppress(FileNotFoundError, shm.SharedMemoryException):
                shm.destroy_shared_memory_region(self._handle)  # raises if unlinked already
            self._handle = None


def space_needed(arrays: Iterable[np.ndarray[Any, Any]]) -> int:
    """Bytes a region needs to hold ``arrays`` as :meth:`Region.write` lays them out."""
    return sum(_aligned(a.nbytes) for a in arrays)


class RegionPool:
    """Regions lent one per request in flight, reused, sized to the largest study seen.

    Thread-safe. The pool only creates and destroys local regions; the client registers a new
    region with the server (``take`` says when) and unregisters the ones the pool retires.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Region] = []
        self._lent: set[str] = set()
        self._regions: dict[str, Region] = {}
        self._largest = 0
        start = process_start(os.getpid()) or "0"
        self.prefix = f"{PREFIX}_{_host_tag()}_{os.getpid()}_{start}_{secrets.token_hex(4)}"
        """The names of this pool's regions: ``<prefix>_<serial>``."""
        self._serial = count()

    def take(self, nbytes: int) -> tuple[Region, bool]:
        """A region of at least ``nbytes`` for one request, and whether it is new (to register)."""
        with self._lock:
            self._largest = max(self._largest, nbytes)
            for i, region in enumerate(self._free):
                if region.size >= nbytes:
                    del self._free[i]
                    self._lent.add(region.name)
                    return region, False
            size = -(-self._largest // GRANULE) * GRANULE
            region = Region(f"{self.prefix}_{next(self._serial)}", size)
            self._regions[region.name] = region
            self._lent.add(region.name)
            return region, True

    def give_back(self, region: Region) -> list[Region]:
        """Return a lent region; returns the regions it retires now.

        Retired are the regions smaller than the largest study seen (this one, or free ones a
        larger study has outgrown). The caller unregisters each, then :meth:`forget` s it.
        """
        with self._lock:
            self._lent.discard(region.name)
            self._free.append(region)
            retired = [r for r in self._free if r.size < self._largest]
            self._free = [r for r in self._free if r.size >= self._largest]
            return retired

    def forget(self, region: Region) -> None:
        """Destroy a region that is no longer registered (retired, or its registration failed)."""
        with self._lock:
            self._lent.discard(region.name)
            self._regions.pop(region.name, None)
            if region in self._free:
                self._free.remove(region)
        region.destroy()

    def drain(self) -> list[Region]:
        """Every region still alive (for close): the caller unregisters, then forgets each."""
        with self._lock:
            return list(self._regions.values())


@dataclass
class Lease:
    """One request's region and where its inputs lie in it.

    Attributes:
        region: The region lent to this request.
        placements: Input name -> :class:`Placement`.
        new: The region was just created and must be registered with the server.
    """

    region: Region
    placements: dict[str, Placement]
    new: bool

    def describe(self) -> str:
        """The region, its size and each input's offset and size, for error messages."""
        inputs = ", ".join(
            f"'{name}' {p.size} bytes at offset {p.offset}" for name, p in self.placements.items()
        )
        return f"shared-memory region '{self.region.name}' of {self.region.size} bytes ({inputs})"


class SharedMemory:
    """A client's shared-memory state: the pool, and whether the server can map its regions.

    The clients make the server calls (register, unregister, status); every decision is here, so
    the blocking and the asyncio client cannot drift.
    """

    def __init__(self) -> None:
        self.pool = RegionPool()
        self.available = True
        self.reaped = False

    def lease(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> Lease | None:
        """A region holding ``arrays`` for one request; None once the server cannot map ours."""
        if not self.available or not arrays:
            return None
        region, new = self.pool.take(space_needed(arrays.values()))
        return Lease(region, region.write(arrays), new)

    def reap_first(self) -> bool:
        """True once per client: look for stale regions before the first registration."""
        first, self.reaped = not self.reaped, True
        return first

    def fall_back(self, lease: Lease, url: str, reason: str) -> None:
        """The server could not map the lease's region: forget it, use gRPC bytes from now on."""
        self.available = False
        self.pool.forget(lease.region)
        warnings.warn(
            f"The server at {url} could not map shared-memory region '{lease.region.name}' "
            f"({reason}): it is not on this host, or cannot see this host's /dev/shm. Sending "
            "the DICOM bytes over gRPC instead.",
            SharedMemoryFallbackWarning,
            stacklevel=4,
        )

    def finish(self, lease: Lease) -> list[Region]:
        """Return the lease's region; the regions retired now come back to be unregistered."""
        return self.pool.give_back(lease.region)

    @staticmethod
    def lost(status: str | None, message: str, lease: Lease) -> bool:
        """The server no longer knows the lease's region (unregistered behind the client)."""
        return status == "NOT_FOUND" and f"'{lease.region.name}'" in message


def release_at_exit(shared: SharedMemory, unregister: Callable[[str], None]) -> Callable[[], None]:
    """A cleanup that unregisters and unlinks every region of ``shared``; safe to call twice.

    Each client registers it with :func:`weakref.finalize`, so a client that was never closed
    still releases its regions when it is collected or the interpreter exits.
    """

    def release() -> None:
        for region in shared.pool.drain():
            with contextlib.suppress(Exception):  # the server may be gone: unlink regardless
                unregister(region.name)
            shared.pool.forget(region)

    return release
