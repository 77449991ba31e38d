"""Start the Triton Inference Server bundled in the ``nvidia-pytriton`` wheel (no Docker).

The wheel carries ``tritonserver`` 2.51 with the Python backend and one backend stub per CPython
version. The stub for the running Python is copied into the backend folder (inside the installed
package, so its relative RPATHs into ``nvidia_pytriton.libs`` still resolve), and the server is
started with this environment's ``bin`` first on PATH: the stub takes ``python3`` from PATH to find
its prefix and site-packages, which is how ``model.py`` imports ``aln`` and numpy from the venv.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from aln.errors import MissingComponentError
from aln.serving import inflight
from aln.serving.errors import RepositoryError, ServerStartError
from aln.serving.supervisor import (
    StubSupervisor,
    new_api_key,
    proc_stat,
    repository_call,
    restricted_api_args,
    shm_regions,
    unlink_regions,
)

ALLOCATORS: dict[str, tuple[str, str] | None] = {
    "glibc": None,
    "jemalloc": ("libjemalloc.so.2", "libjemalloc2"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}
"""The malloc ``tritonserver`` and its Python-backend stubs run with: glibc's own, or a library
preloaded in its place (its file name and Debian package; ``make install`` adds both). Triton's
model-management guide suggests trying jemalloc and tcmalloc when its memory grows; what they do
here is measured in ``docs/reliability.md``."""
DEFAULT_ALLOCATOR = "jemalloc"
"""Measured side by side with the others under the same load (``docs/reliability.md``): the only
one whose memory levelled off, the least memory, throughput within the machine's drift. Not for a
repository with an OpenVINO engine (:func:`repository_allocator`)."""


def repository_allocator(repository: Path, requested: str | None = None) -> str:
    """The allocator ``repository`` is served with: ``requested``, else :data:`DEFAULT_ALLOCATOR`.

    OpenVINO loads its device plugins with ``RTLD_DEEPBIND``, so they free with glibc what a
    preloaded allocator gave them and the process aborts ("free(): invalid pointer", seen with
    jemalloc and tcmalloc alike): a repository with an OpenVINO engine is served with glibc's
    malloc by default, and a preloaded allocator requested for it is refused.

    Raises:
        ValueError: A preloaded allocator requested for a repository with an OpenVINO engine.
    """
    from aln.serving.spec import ENGINE_FILES

    openvino = next(Path(repository).glob(f"*/*/{ENGINE_FILES['openvino']}"), None)
    if requested is None:
        return "glibc" if openvino else DEFAULT_ALLOCATOR
    if openvino is not None and ALLOCATORS[requested] is not None:
        raise ValueError(
            f"ServerConfig.allocator: {requested} cannot serve '{openvino.parent.parent.name}', an "
            "OpenVINO engine (its plugins are loaded with RTLD_DEEPBIND and free with glibc what "
            "the preloaded allocator gave them); use glibc"
        )
    return requested


def allocator_library(name: str) -> Path | None:
    """The shared library to preload for allocator ``name`` (None: glibc's malloc).

    ``name`` is a key of :data:`ALLOCATORS` (:class:`ServerConfig` refuses any other).

    Raises:
        MissingComponentError: Its library is not installed.
    """
    wanted = ALLOCATORS[name]
    if wanted is None:
        return None
    library, package = wanted
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    folders = [Path(p, multiarch) for p in ("/usr/lib", "/lib")] + [Path("/usr/lib64")]
    for folder in folders:
        if (folder / library).is_file():
            return folder / library
    raise MissingComponentError(
        f"The {name} allocator needs {library}, found in none of "
        f"{', '.join(str(f) for f in folders)}; install the Debian package {package} "
        "(`make install` does), or serve with glibc's malloc (`aln serve --allocator glibc`)",
        package,
    )


def triton_home() -> Path:
    """The ``tritonserver`` folder inside the installed ``nvidia-pytriton`` wheel.

    Raises:
        MissingComponentError: The wheel is not installed (``pip install 'aln-triton[serve]'``).
    """
    try:
        import pytriton
    except ImportError as exc:
        raise MissingComponentError(
            "The Triton server comes with the 'nvidia-pytriton' wheel, which is not installed; "
            "run `make install` or `pip install 'aln-triton[serve]'`",
            "nvidia-pytriton",
        ) from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def install_stub(home: Path) -> Path:
    """Place the Python-backend stub for this interpreter where the backend looks for it."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    source = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not source.is_file():
        raise MissingComponentError(
            f"The nvidia-pytriton wheel has no Python-backend stub for Python {version}",
            "triton_python_backend_stub",
        )
    target = home / "backends" / "python" / "triton_python_backend_stub"
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        shutil.copy2(source, target)
    return target


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalService:
    """What the helper services the project starts on loopback share (Orthanc, nginx).

    A subclass holds its process in ``_process`` and its scratch folder (configuration, logs,
    storage) in ``_work``, names its log (``LOG``), the signal that stops it gracefully
    (``STOP_SIGNAL``) and how long that may take (``STOP_TIMEOUT_S``), and implements
    ``start()``.
    """

    LOG = "service.log"
    STOP_SIGNAL = signal.SIGTERM
    STOP_TIMEOUT_S = 20.0
    _process: subprocess.Popen[bytes] | None
    _work: Path | None

    def start(self) -> Self:
        """Start the service and wait until it answers (each service defines it)."""
        raise NotImplementedError

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the service's log ("" before it has one)."""
        if self._work is None or not (self._work / self.LOG).exists():
            return ""
        text = (self._work / self.LOG).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float | None = None) -> None:
        """``STOP_SIGNAL``, SIGKILL after ``timeout_s``; then remove the scratch folder."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(self.STOP_SIGNAL)
            try:
                process.wait(self.STOP_TIMEOUT_S if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ServerConfig:
    """How to start the server.

    Attributes:
        repository: The model repository.
        grpc_port: gRPC port.
        http_port: HTTP port (health, metadata).
        metrics_port: Prometheus metrics port.
        host: Address to bind.
        log_verbose: Triton's ``--log-verbose`` level.
        grpc_tls: ``(server cert, server key, client CA or None)`` to serve gRPC over TLS, with
            mutual TLS when a client CA is given.
        extra_args: More ``tritonserver`` arguments.
        environment: More environment variables for ``tritonserver`` and its Python-backend stubs
            (for example glibc's ``MALLOC_ARENA_MAX``; ``aln bench soak --variant`` compares some).
        allocator: Their malloc, a key of :data:`ALLOCATORS`; None: :data:`DEFAULT_ALLOCATOR`,
            or glibc's for a repository with an OpenVINO engine (:func:`repository_allocator`).
        supervise_stubs: Restore a model whose Python-backend stub dies
            (:class:`aln.serving.supervisor.StubSupervisor`); the server then runs with explicit
            model control and a repository API only the supervisor can call.
    """

    repository: Path
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    log_verbose: int = 0
    grpc_tls: tuple[Path, Path, Path | None] | None = None
    extra_args: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    allocator: str | None = None
    supervise_stubs: bool = False

    def __post_init__(self) -> None:
        if self.allocator is not None and self.allocator not in ALLOCATORS:
            raise ValueError(
                f"ServerConfig.allocator: unknown allocator '{self.allocator}'; choose from "
                f"{', '.join(ALLOCATORS)}"
            )

    @classmethod
    def on_free_ports(cls, repository: Path, **fields: Any) -> ServerConfig:
        """A configuration whose gRPC, HTTP and metrics ports are free now; ``fields`` set."""
        ports = {name: free_port() for name in ("grpc_port", "http_port", "metrics_port")}
        return cls(Path(repository), **{**ports, **fields})

    def command(self, home: Path, api_key: str | None = None) -> list[str]:
        """The ``tritonserver`` command line (``api_key``: the repository API's restriction)."""
        args = [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={home / 'backends'}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            f"--grpc-address={self.host}",
            f"--http-address={self.host}",
            f"--metrics-address={self.host}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.grpc_tls is not None:
            cert, key, client_ca = self.grpc_tls
            args += [
                "--grpc-use-ssl=true",
                f"--grpc-server-cert={cert}",
                f"--grpc-server-key={key}",
            ]
            if client_ca is not None:
                args += [f"--grpc-root-cert={client_ca}", "--grpc-use-ssl-mutual=true"]
        if api_key is not None:
            args += restricted_api_args(api_key)
        return args + self.extra_args


class EmbeddedServer:
    """A running ``tritonserver`` process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedServer(ServerConfig(Path("repo"), grpc_port=free_port(), ...)) as server:
            server.wait_until_ready("aln_ensemble")
    """

    def __init__(self, config: ServerConfig, log: IO[str] | Path | None = None) -> None:
        self.config = config
        self._log_target = log
        self._log_handle: IO[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._api_key = new_api_key() if config.supervise_stubs else None
        self.supervisor: StubSupervisor | None = None
        self.inflight_folder: Path | None = None
        """Where supervised model instances record the requests they work on (:mod:`inflight`)."""

    def start(self) -> EmbeddedServer:
        """Start the process (returns at once; see :meth:`wait_until_ready`).

        Raises:
            RepositoryError: The repository holds no ``aln_ensemble``.
            MissingComponentError: The ``nvidia-pytriton`` wheel is not installed.
        """
        from aln.preprocessing import contract

        if not (Path(self.config.repository) / contract.ENSEMBLE / "config.pbtxt").is_file():
            raise RepositoryError(
                f"The model repository '{self.config.repository}' holds no {contract.ENSEMBLE}; "
                "run `aln build-repo CHECKPOINT --out DIR` first"
            )
        home = triton_home()
        install_stub(home)
        env = dict(os.environ)
        # The stub finds its Python prefix and site-packages from the python3 on PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("OMP_NUM_THREADS", "1")
        library = allocator_library(
            repository_allocator(self.config.repository, self.config.allocator)
        )
        if library is not None:
            env["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(library), env.get("LD_PRELOAD")]))
        env.update(self.config.environment)
        if self.config.supervise_stubs:
            shm = Path("/dev/shm")
            self.inflight_folder = Path(
                tempfile.mkdtemp(
                    prefix="aln-inflight-", dir=shm if os.access(shm, os.W_OK) else None
                )
            )
            env[inflight.FOLDER_VARIABLE] = str(self.inflight_folder)
        stdout: IO[str] | int | None
        if isinstance(self._log_target, Path):
            self._log_handle = self._log_target.open("w")
            stdout = self._log_handle
        else:
            stdout = self._log_target
        self.process = subprocess.Popen(
            self.config.command(home, self._api_key),
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """The server's process id.

        Raises:
            ServerStartError: :meth:`start` was not called.
        """
        if self.process is None:
            raise ServerStartError("The server was not started; call start() first")
        return self.process.pid

    def is_ready(self, model: str | None = None) -> bool:
        """Whether the server (and ``model``, when given) answers ready over HTTP."""
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        url = f"http://{self.config.host}:{self.config.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_until_ready(self, model: str | None = None, timeout_s: float = 180.0) -> None:
        """Block until ready.

        Raises:
            ServerStartError: The process exited, or ``timeout_s`` passed.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(
                    f"tritonserver exited with status {self.process.returncode} "
                    "before it was ready; see its log"
                )
            if self.is_ready(model):
                self._supervise()
                return
            time.sleep(0.25)
        raise ServerStartError(f"tritonserver was not ready within {timeout_s:.0f} s")

    def _supervise(self) -> None:
        """Start watching the stubs once the server is first ready (``supervise_stubs``)."""
        if self._api_key is None or self.supervisor is not None:
            return
        log = self._log_handle if self._log_handle is not None else None
        self.supervisor = StubSupervisor(
            self.pid,
            f"http://{self.config.host}:{self.config.http_port}",
            self._api_key,
            log=log,
            inflight_folder=self.inflight_folder,
        ).start()

    def drain(self, timeout_s: float) -> bool:
        """Stop admitting requests and let the admitted ones finish; returns whether they did.

        The ensemble is unloaded through the repository API: readiness turns false at once, new
        requests are refused (NOT_FOUND "has no available versions", which the SDK retries, so a
        load balancer's other replicas take them), and Triton completes the requests already
        admitted before the unload finishes. Needs ``supervise_stubs`` (the repository API key);
        without it this only stops the supervisor and returns False.
        """
        from aln.preprocessing import contract

        if self.supervisor is not None:
            self.supervisor.stop()  # stubs exiting from here on are not crashes
        if self._api_key is None or self.process is None or self.process.poll() is not None:
            return False
        url = f"http://{self.config.host}:{self.config.http_port}"
        deadline = time.monotonic() + timeout_s
        try:
            repository_call(url, self._api_key, f"models/{contract.ENSEMBLE}/unload")
            while time.monotonic() < deadline:
                index = repository_call(url, self._api_key, "index")
                states = {m.get("name"): m.get("state") for m in index or []}  # type: ignore[attr-defined]
                if (
                    states.get(contract.ENSEMBLE) != "READY"
                    and states.get(contract.ENSEMBLE) != "UNLOADING"
                ):
                    return True
                time.sleep(0.1)
        except (urllib.error.URLError, OSError):
            return False
        return False

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Stop with SIGTERM, then SIGKILL if it hangs; a supervised server drains first.

        ``timeout_s`` bounds the whole stop: half of it at most for the drain.

        Triton 2.51 can hang on SIGTERM while it unloads a Python-backend model that served
        ensemble requests; with the ensemble unloaded first (:meth:`drain`) it usually exits at
        once, and is killed at the deadline when it does not (seen after model reloads).
        """
        if self.supervisor is not None:
            self.supervisor.stop()  # first: stubs exiting on shutdown are not crashes
        if self.process is None:
            return None
        deadline = time.monotonic() + timeout_s
        if self._api_key is not None and self.process.poll() is None:
            self.drain(timeout_s / 2)  # half the budget; the rest for the process to exit
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reap_group()
        if self.inflight_folder is not None:
            shutil.rmtree(self.inflight_folder, ignore_errors=True)
        if self._log_handle is not None:
            self._log_handle.close()
        return self.process.returncode

    def _reap_group(self) -> None:
        """Kill what is left of the server's process group and unlink its stubs' regions.

        Python-backend stubs outlive a tritonserver killed outright (SIGKILL, OOM): one was seen
        15 minutes later, ignoring SIGTERM, holding 300 MB and the test runner's output pipe.
        The group is the server's own session (``start_new_session``), so nothing else is in it.
        """
        assert self.process is not None
        left = self._group()
        regions = [r for pid in left for r in shm_regions(pid)]
        deadline = time.monotonic() + 5.0
        while left and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
            left = self._group()
        unlink_regions(regions)

    def _group(self) -> list[int]:
        """The live processes of the server's process group (zombies are dead)."""
        assert self.process is not None
        alive = []
        for entry in Path("/proc").iterdir():
            stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
            # fields after the command name: state, ppid, pgrp, ...
            if stat is not None and stat[2] == str(self.process.pid) and stat[0] != "Z":
                alive.append(int(entry.name))
        return alive

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
