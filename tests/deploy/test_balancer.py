"""nginx as the gRPC balancer (real nginx from Debian; the replicas here are ports nobody
listens on: the served replicas are in ``tests/integration/test_replicas.py``)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from aln.client import AlnClient, ImageInput, ModelUnavailableError
from aln.deploy.balancer import (
    BalancerError,
    GrpcBalancer,
    max_body_bytes,
    nginx_binary,
    nginx_config,
)
from aln.serving.server import free_port
from aln.synthetic.mammogram import synth_case

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx comes with make install (Debian nginx)"
)


def test_the_configuration_balances_least_connections_and_lets_studies_through(tmp_path):
    text = nginx_config(["127.0.0.1:9001", "127.0.0.1:9002"], "127.0.0.1:9000", tmp_path)
    assert "least_conn;" in text and "grpc_pass grpc://aln_triton;" in text
    assert text.count("max_fails=1 fail_timeout=5s") == 2
    assert f"client_max_body_size {max_body_bytes()};" in text  # two 128 MiB studies fit
    with pytest.raises(ValueError, match="at least one replica"):
        nginx_config([], "127.0.0.1:9000", tmp_path)


def test_all_replicas_down_is_unavailable_within_the_deadline():
    """No replica answers: the SDK raises UNAVAILABLE naming the cause, never hangs."""
    case = synth_case(np.random.default_rng(2), "hologic", "explicit", shape=(600, 500))
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with GrpcBalancer(dead) as balancer, AlnClient(balancer.url, timeout_s=4) as client:
        started = time.monotonic()
        with pytest.raises(ModelUnavailableError) as refused:
            client.predict(ImageInput(case.dicom, case.lesion_centre), case.clinical)
        elapsed = time.monotonic() - started
        assert elapsed < 4 + 2, elapsed
        assert "[UNAVAILABLE]" in str(refused.value) and "502" in str(refused.value)
        calls = balancer.calls()
        assert calls and all(status == 502 for status, _ in calls)
        assert set(calls[0][1]) == set(dead)  # nginx tried both before answering 502
        assert len(calls) >= 2  # the SDK retried within its deadline


def test_a_bad_replica_address_is_refused_naming_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "aln", "deploy", "balancer", "--replica", "127.0.0.1:99999"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        'nginx refused its configuration: nginx: [emerg] invalid port in upstream "127.0.0.1:99999"'
        in done.stderr
    )


def test_a_port_in_use_is_refused_not_taken_for_a_started_balancer():
    """A second balancer on a busy port must not pass for started (its nginx cannot bind)."""
    with (
        GrpcBalancer([f"127.0.0.1:{free_port()}"]) as first,
        pytest.raises(BalancerError, match=f"Port {first.port} is in use"),
    ):
        GrpcBalancer([f"127.0.0.1:{free_port()}"], port=first.port).start()
