"""A real tritonserver (from the nvidia-pytriton wheel) on free ports, for the whole session.

Never skipped: the server comes with the install. Its log is printed when a test fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aln.export.repository import build_repository
from aln.model.checkpoint import new_demo_checkpoint
from aln.preprocessing import contract
from aln.serving.server import EmbeddedServer, ServerConfig


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """``(server, checkpoint folder, grpc url)`` for the default Swin V2 tiny demo model."""
    work = tmp_path_factory.mktemp("served")
    checkpoint = work / "checkpoint"
    new_demo_checkpoint(checkpoint, "swinv2_tiny_window8_256", seed=7)
    repo, _ = build_repository(
        checkpoint,
        work / "repo",
        {"max_batch": 8, "preprocess_instances": 2, "max_queue_delay_us": 5000},
    )
    # supervised as `aln serve` runs it; and a drained stop exits at once
    config = ServerConfig.on_free_ports(repo, supervise_stubs=True)
    log = work / "tritonserver.log"
    server = EmbeddedServer(config, log=log).start()
    try:
        server.wait_until_ready(contract.ENSEMBLE, timeout_s=240)
    except Exception:
        server.stop()
        print(log.read_text()[-20000:])
        raise
    yield server, checkpoint, f"127.0.0.1:{config.grpc_port}"
    server.stop(timeout_s=10)  # after the whole session; nothing is measured any more


@pytest.fixture(autouse=True)
def _print_server_log_on_failure(request):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "served" in request.fixturenames:
        server = request.getfixturevalue("served")[0]
        log = server._log_target
        if isinstance(log, Path) and log.exists():
            print("---- tritonserver log (tail) ----")
            print(log.read_text()[-8000:])


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def study():
    from aln.synthetic.mammogram import synth_case

    return synth_case(
        np.random.default_rng(21),
        "hologic",
        "jpeg2000",
        shape=(1400, 1150),
        laterality="R",
        view="MLO",
    )


@pytest.fixture(scope="session")
def repository_variant(served, tmp_path_factory):
    """``make(name, **spec_fields)``: the session model's engines under other serving settings.

    Writes a repository with :func:`aln.export.repository.write_repository` from the served
    repository's engines and manifest (no new export), so a test can serve another spec fast.
    """
    from aln.export.repository import write_repository
    from aln.preprocessing.manifest import MANIFEST_FILE
    from aln.serving.spec import RepositorySpec

    source = served[0].config.repository
    engines = {
        model: source / model / "1" / "model.onnx"
        for model in (contract.BACKBONE_PRIMARY, contract.BACKBONE_AUXILIARY, contract.FUSION_HEAD)
    }

    def make(name: str, **fields):
        spec = RepositorySpec(embedding_dim=768, clinical_dim=40, **fields)
        out = tmp_path_factory.mktemp(name) / "repo"
        return write_repository(
            out, spec, engines, source / contract.PREPROCESS / "1" / MANIFEST_FILE
        )

    return make


@pytest.fixture(scope="session")
def serve_repository(tmp_path_factory):
    """``with serve_repository(repo) as url``: a fresh server on ``repo``, ready, then stopped."""
    import contextlib

    @contextlib.contextmanager
    def start(repo):
        config = ServerConfig.on_free_ports(repo, supervise_stubs=True)
        log = Path(repo).parent / "tritonserver.log"
        server = EmbeddedServer(config, log=log).start()
        try:
            server.wait_until_ready(contract.ENSEMBLE, timeout_s=240)
            yield f"127.0.0.1:{config.grpc_port}"
        except Exception:
            print(log.read_text()[-8000:])
            raise
        finally:
            server.stop()

    return start
