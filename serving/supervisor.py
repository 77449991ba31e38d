"""Restore a model whose Python-backend stub process died.

A native decoder that segfaults on a hostile file (OpenJPEG, CharLS, libjpeg, the RLE decoder are
native code) kills the stub process of one model instance. Triton 2.51 never restarts it: every
request routed to that instance then fails with ``Stub process ... is not healthy`` while
``/v2/health/ready`` keeps answering 200, so a load balancer keeps sending traffic into it.

:class:`StubSupervisor` watches the stubs (children of ``tritonserver``, one per model instance)
and, when one is gone or a zombie, reloads its model through Triton's repository API: unload
(readiness turns false at once under ``--strict-readiness``; requests are refused UNAVAILABLE or
NOT_FOUND, which the SDK retries), then load (new stubs), after which the server is ready again.
The repository API is kept away from clients: the server is started with a restricted-API key
that only the supervisor sends (:func:`restricted_api_args`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aln.preprocessing import contract
from aln.serving import inflight

STUB_BINARY = "triton_python_backend_stub"
API_KEY_HEADER = "aln-repository-key"
"""The header that unlocks Triton's model-repository API (load/unload) for the supervisor."""
DECODING_MODELS = frozenset({contract.PREPROCESS})
"""Models that run native decoders on the caller's file: a request inside one of them when it
crashed is quarantined (:class:`aln.serving.inflight.Quarantine`)."""
LEFTOVER_GRACE_S = 5.0
"""How long an old stub may outlive its model's reload before the supervisor kills it."""


def restricted_api_args(key: str) -> list[str]:
    """``tritonserver`` arguments that leave the repository API to the holder of ``key``.

    Explicit model control with every model loaded at start (as without it), and the
    model-repository API (HTTP and gRPC) refused to any caller without the ``key`` header.
    """
    restriction = f"model-repository:{API_KEY_HEADER}={key}"
    return [
        "--model-control-mode=explicit",
        "--load-model=*",
        f"--http-restricted-api={restriction}",
        f"--grpc-restricted-protocol={restriction}",
    ]


def new_api_key() -> str:
    """A random key for one server's lifetime."""
    return secrets.token_hex(16)


def repository_call(http_url: str, api_key: str, path: str) -> object:
    """POST to Triton's repository API (``index``, ``models/M/load``, ``models/M/unload``).

    Raises:
        urllib.error.URLError: The server refused or is unreachable.
    """
    request = urllib.request.Request(
        f"{http_url.rstrip('/')}/v2/repository/{path}",
        data=json.dumps({}).encode(),
        headers={API_KEY_HEADER: api_key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        body = response.read()
    return json.loads(body) if body else None


@dataclass(frozen=True)
class Stub:
    """One Python-backend stub process.

    Attributes:
        pid: Its process id.
        model: The model it serves (the folder above ``<version>/model.py``).
        instance: Triton's instance name (``preprocess_0_1``).
        regions: The shared-memory regions Triton handed it (names in ``/dev/shm``): a stub that
            dies leaves them behind, so the supervisor unlinks them.
    """

    pid: int
    model: str
    instance: str
    regions: tuple[str, ...] = ()


def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), None when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def proc_cmdline(pid: int) -> list[str] | None:
    """The arguments of process ``pid`` (``/proc/<pid>/cmdline``), None when gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().decode(errors="replace").split("\0")
    except OSError:
        return None


def stub_of(pid: int) -> Stub | None:
    """The model instance stub that process ``pid`` runs, None for any other process.

    Instance stubs are started as ``triton_python_backend_stub <repo>/<model>/<version>/model.py
    ... <model>_<group>_<index> ...``; a stub named after the model alone only runs while the
    model loads (config auto-completion) and exits by design, so it is not an instance.
    """
    argv = proc_cmdline(pid)
    if argv is None or len(argv) < 9 or not argv[0].endswith(STUB_BINARY):
        return None
    model, instance = Path(argv[1]).parent.parent.name, argv[8]
    if not re.fullmatch(rf"{re.escape(model)}_\d+_\d+", instance):
        return None
    return Stub(pid, model, instance, tuple(_regions_in(argv)))


SHM_REGION_PREFIX = "triton_python_backend_shm_region_"
"""How the Python backend names the shared-memory region it hands each stub."""


def _regions_in(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith(SHM_REGION_PREFIX) and "/" not in a]


def shm_regions(pid: int) -> list[str]:
    """The Python-backend shared-memory regions named on process ``pid``'s command line."""
    return _regions_in(proc_cmdline(pid) or [])


def unlink_regions(regions: Iterable[str]) -> None:
    """Remove shared-memory regions from ``/dev/shm`` (those already gone are passed over)."""
    for region in regions:
        Path("/dev/shm", region).unlink(missing_ok=True)


def stubs_of(server_pid: int) -> list[Stub]:
    """The running instance stubs whose parent is ``server_pid``.

    A dead stub (a zombie) has no command line any more: :class:`StubSupervisor` remembers the
    stubs it has seen running and asks :func:`death` about each.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = proc_stat(int(entry))
        if fields is None or int(fields[1]) != server_pid:
            continue
        stub = stub_of(int(entry))
        if stub is not None:
            found.append(stub)
    return found


def death(stub: Stub) -> str | None:
    """Why ``stub`` is dead (``"killed by SIGSEGV"``, ``"exited 1"``, ``"gone"``), None if alive."""
    fields = proc_stat(stub.pid)
    if fields is None:
        return "gone"
    if fields[0] not in ("Z", "X"):
        return None
    status = int(fields[49]) if len(fields) > 49 else 0  # exit_code (Linux 3.5+): wait status
    if status & 0x7F:
        try:
            return f"killed by {signal.Signals(status & 0x7F).name}"
        except ValueError:
            return f"killed by signal {status & 0x7F}"
    return f"exited {status >> 8}"


class StubSupervisor:
    """Watch a server's stubs; reload the model of any that dies.

    Args:
        server_pid: The ``tritonserver`` process.
        http_url: ``http://host:port`` of its HTTP endpoint.
        api_key: The restricted-API key the server was started with.
        poll_s: How often the stubs are checked.
        log: Where crash and recovery lines go (default: stderr).
        inflight_folder: The folder of the instances' markers (:mod:`aln.serving.inflight`):
            a crash line then names the requests the dead instance was working on.
    """

    def __init__(
        self,
        server_pid: int,
        http_url: str,
        api_key: str,
        *,
        poll_s: float = 0.2,
        log: IO[str] | None = None,
        inflight_folder: Path | None = None,
    ) -> None:
        self.server_pid = server_pid
        self.http_url = http_url.rstrip("/")
        self.api_key = api_key
        self.poll_s = poll_s
        self.log = log or sys.stderr
        self.inflight_folder = inflight_folder
        self.recoveries: list[dict[str, object]] = []
        # old stubs of a reloaded model, by pid: the stub and when it must be gone by
        self._expected_exits: dict[int, tuple[Stub, float]] = {}
        self._known: dict[int, Stub] = {}  # every stub seen running, by pid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _say(self, message: str) -> None:
        print(f"aln serve: {message}", file=self.log, flush=True)

    def _repository(self, model: str, action: str) -> None:
        repository_call(self.http_url, self.api_key, f"models/{model}/{action}")

    def restore(self, model: str, reason: str, instance: str) -> float:
        """Reload ``model`` (unload, then load); returns the seconds it took."""
        start = time.monotonic()
        ids = inflight.read(self.inflight_folder, instance) if self.inflight_folder else []
        quarantined = ""
        if ids and model in DECODING_MODELS and self.inflight_folder is not None:
            cause = f"model instance '{instance}' died ({reason})"
            inflight.Quarantine(self.inflight_folder).add(ids, cause)
            quarantined = " (quarantined: refused if sent again)"
        self._say(
            f"the stub of model instance '{instance}' died ({reason})"
            f"{self._working_on(ids)}{quarantined}; reloading model '{model}', the server "
            "reports not ready until it is back"
        )
        old = [s for s in stubs_of(self.server_pid) if s.model == model]
        self._expected_exits.update({s.pid: (s, math.inf) for s in old})
        self._repository(model, "unload")
        self._repository(model, "load")
        took = time.monotonic() - start
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        self._expected_exits.update({s.pid: (s, deadline) for s in old})
        self.recoveries.append(
            {"model": model, "instance": instance, "reason": reason, "seconds": round(took, 2)}
        )
        self._say(f"model '{model}' reloaded in {took:.1f} s")
        return took

    def _working_on(self, ids: list[str]) -> str:
        """What the dead instance's marker said it was doing, as the crash line puts it."""
        if self.inflight_folder is None:
            return ""
        if not ids:
            return " while idle"
        named = ", ".join(f"'{i}'" for i in ids)
        return f" while working on request{'s' if len(ids) > 1 else ''} {named}"

    def check_once(self) -> list[str]:
        """Restore every model with a dead stub now; returns the models restored."""
        restored: list[str] = []
        self._known.update({stub.pid: stub for stub in stubs_of(self.server_pid)})
        for stub in list(self._known.values()):
            reason = death(stub)
            if reason is None:
                continue
            del self._known[stub.pid]
            self._remove_scratch(stub)
            if stub.pid not in self._expected_exits and stub.model not in restored:
                try:
                    self.restore(stub.model, reason, stub.instance)
                except (urllib.error.URLError, OSError) as exc:
                    self._say(f"reloading model '{stub.model}' failed: {exc}; will retry")
                    self._known[stub.pid] = stub
                    continue
                restored.append(stub.model)
            unlink_regions(stub.regions)  # Triton's reload does not: they outlived the server
        self.reap_leftovers()
        return restored

    def _remove_scratch(self, stub: Stub) -> None:
        """Delete the decoding scratch files a dead stub left (a crash inside OpenJPEG)."""
        if stub.model not in DECODING_MODELS:
            return
        from aln.preprocessing.decode import remove_scratch_of  # deferred: the codecs load

        for path in remove_scratch_of(stub.pid):
            self._say(f"removed {path.name}, left by the dead stub of '{stub.instance}'")

    def reap_leftovers(self) -> list[Stub]:
        """Kill the stubs of a reloaded model's old generation still alive past their grace.

        Triton 2.51's unload can leave one running (seen after a crash reload): it serves nothing
        and holds its memory. Returns the stubs killed now.
        """
        killed = []
        now = time.monotonic()
        for pid, (stub, deadline) in list(self._expected_exits.items()):
            if death(stub) is not None:
                del self._expected_exits[pid]
                self._known.pop(pid, None)  # an expected exit: never a reason to reload
            elif now > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                unlink_regions(stub.regions)
                self._say(
                    f"a stub of model '{stub.model}' ({stub.instance}, pid {pid}) outlived the "
                    f"model's reload by {LEFTOVER_GRACE_S:.0f} s; killed it"
                )
                # still expected: its death, seen on a later check, is never a reason to reload
                self._expected_exits[pid] = (stub, math.inf)
                killed.append(stub)
        return killed

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check_once()

    def start(self) -> StubSupervisor:
        """Watch in a daemon thread until :meth:`stop` (the stubs running now are known at once)."""
        self._known.update({stub.pid: stub for stub in stubs_of(self.server_pid)})
        self._thread = threading.Thread(target=self._run, name="stub-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
