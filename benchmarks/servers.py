"""Start the servers a benchmark compares: the Triton ensemble and the naive baseline.

Both are context managers yielding a gRPC ``host:port`` that the client SDK can drive; both stop
their processes on exit, also when the benchmark fails.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aln.client import AlnClient
from aln.model.backbones import DEFAULT_BACKBONE
from aln.preprocessing import contract

if TYPE_CHECKING:
    from aln.benchmarks.baseline import BaselineOptions


@dataclass(frozen=True)
class Running:
    """A server started for a benchmark.

    Attributes:
        url: gRPC ``host:port``.
        pid: Its main process (Triton's Python-backend stubs are its children).
        repository: The model repository it serves (None for the baseline).
        spec: The :class:`aln.serving.spec.RepositorySpec` it was built from (None for
            the baseline).
    """

    url: str
    pid: int
    repository: Path | None = None
    spec: Any = None


def demo_checkpoint(folder: Path, backbone: str = DEFAULT_BACKBONE) -> Path:
    """A seeded demo checkpoint in ``folder`` (written once, reused after)."""
    from aln.model.checkpoint import new_demo_checkpoint
    from aln.preprocessing.manifest import MANIFEST_FILE

    checkpoint = Path(folder) / f"checkpoint-{backbone}"
    if not (checkpoint / MANIFEST_FILE).is_file():
        new_demo_checkpoint(checkpoint, backbone)
    return checkpoint


@contextlib.contextmanager
def ensemble(
    checkpoint: Path, work: Path, spec_overrides: dict[str, Any] | None = None
) -> Iterator[Running]:
    """Build a repository into ``work`` and serve it with tritonserver.

    Args:
        checkpoint: A checkpoint (exported on the way) or an ``aln export`` folder.
        work: Scratch folder (repository and server log).
        spec_overrides: :class:`aln.serving.spec.RepositorySpec` fields.
    """
    from aln.export.repository import build_repository

    repo, spec = build_repository(checkpoint, Path(work) / "model_repository", spec_overrides)
    with serve(repo, spec, Path(work) / "tritonserver.log") as running:
        yield running


@contextlib.contextmanager
def serve(repository: Path, spec: Any, log: Path, **server_fields: Any) -> Iterator[Running]:
    """Serve a built repository with tritonserver on free loopback ports until exit.

    Args:
        repository: The model repository (several servers may serve one).
        spec: The :class:`aln.serving.spec.RepositorySpec` it was built from.
        log: The server's log file.
        server_fields: More :class:`aln.serving.server.ServerConfig` fields.
    """
    from aln.serving.server import EmbeddedServer, ServerConfig

    config = ServerConfig.on_free_ports(repository, **server_fields)
    with EmbeddedServer(config, log=log) as server:
        server.wait_until_ready(contract.ENSEMBLE)
        yield Running(f"127.0.0.1:{config.grpc_port}", server.pid, repository, spec)


def _wait_for(process: subprocess.Popen[bytes], url: str, timeout_s: float, log: Path) -> None:
    """Wait until the baseline answers ready; fail at once, with its log, if it exits."""
    from aln.client import ModelUnavailableError

    deadline = time.monotonic() + timeout_s
    with AlnClient(url) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"The baseline server exited with status {process.returncode} before it was "
                    f"ready; its log ends:\n{log.read_text()[-2000:]}"
                )
            try:
                client.wait_until_ready(timeout_s=1.0, poll_s=0.2)
                return
            except ModelUnavailableError:
                if time.monotonic() > deadline:
                    raise


@contextlib.contextmanager
def baseline(
    checkpoint: Path,
    work: Path,
    options: BaselineOptions | None = None,
    export: Path | None = None,
    ready_timeout_s: float = 120.0,
) -> Iterator[Running]:
    """Start :mod:`aln.benchmarks.baseline` in its own process on a free port.

    Args:
        checkpoint: The checkpoint (torch engine, manifest).
        work: Scratch folder (its log).
        options: Engine, decode, threads, workers, auxiliary skip (default: the naive server).
        export: The checkpoint's ``aln export`` folder (needed by the onnxruntime engine).
        ready_timeout_s: How long it may take to load.
    """
    from aln.benchmarks.baseline import BaselineOptions
    from aln.serving.server import free_port

    options = options or BaselineOptions()
    port = free_port()
    command = [sys.executable, "-m", "aln.benchmarks.baseline", "--checkpoint", str(checkpoint)]
    command += ["--port", str(port), *options.arguments()]
    command += [] if export is None else ["--export", str(export)]
    log_path = Path(work) / "baseline.log"
    log = log_path.open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{port}"
    try:
        _wait_for(process, url, ready_timeout_s, log_path)
        yield Running(url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def add_arguments(parser: argparse.ArgumentParser, url: bool = True) -> None:
    """Which server to measure: a running one (``--url``) or one started here."""
    if url:
        parser.add_argument(
            "--url", help="gRPC host:port of a running server (default: start the ensemble here)"
        )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help=f"checkpoint to serve when starting a server (default: {DEFAULT_BACKBONE} demo)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where to build checkpoints and repositories (default: temp)"
    )


@contextlib.contextmanager
def workdir(args: argparse.Namespace) -> Iterator[Path]:
    """``--workdir`` or a temporary folder removed afterwards."""
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        yield args.workdir
        return
    with tempfile.TemporaryDirectory(prefix="aln-bench-") as scratch:
        yield Path(scratch)


def checkpoint_of(args: argparse.Namespace, work: Path) -> Path:
    """``--checkpoint`` or the seeded demo checkpoint."""
    return args.checkpoint or demo_checkpoint(work)


def demo_repository(args: argparse.Namespace, work: Path) -> Path:
    """The repository of ``--checkpoint`` (or the demo) built into ``work`` with defaults."""
    from aln.export.repository import build_repository

    repo, _ = build_repository(checkpoint_of(args, work), work / "model_repository", None)
    return repo


@contextlib.contextmanager
def target(args: argparse.Namespace, spec_overrides: dict[str, Any] | None = None) -> Iterator[str]:
    """The url of ``--url``, or of an ensemble started here from ``--checkpoint``."""
    with target_process(args, spec_overrides) as (url, _):
        yield url


@contextlib.contextmanager
def target_process(
    args: argparse.Namespace, spec_overrides: dict[str, Any] | None = None
) -> Iterator[tuple[str, int | None]]:
    """As :func:`target`, with the server's main process (None for ``--url``: not started here)."""
    if getattr(args, "url", None):
        yield args.url, None
        return
    with workdir(args) as work, ensemble(checkpoint_of(args, work), work, spec_overrides) as run:
        yield run.url, run.pid
