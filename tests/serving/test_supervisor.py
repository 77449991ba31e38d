"""The stub supervisor's process reading, without a server (real child processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from aln.serving.supervisor import API_KEY_HEADER, Stub, death, restricted_api_args, stub_of


def test_death_names_the_signal_of_a_dead_child_and_none_for_a_live_one():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stub = Stub(child.pid, "preprocess", "preprocess_0_0")
    try:
        assert death(stub) is None
        os.kill(child.pid, signal.SIGSEGV)
        deadline = time.monotonic() + 10
        while death(stub) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert death(stub) == "killed by SIGSEGV"  # a zombie: not reaped yet
    finally:
        child.kill()
        child.wait()
    assert death(stub) == "gone"


def test_only_instance_stubs_are_stubs():
    assert stub_of(os.getpid()) is None  # this interpreter is not a stub


def test_the_repository_api_is_restricted_to_the_key():
    args = restricted_api_args("k3y")
    assert "--model-control-mode=explicit" in args and "--load-model=*" in args
    assert f"--http-restricted-api=model-repository:{API_KEY_HEADER}=k3y" in args
    assert f"--grpc-restricted-protocol=model-repository:{API_KEY_HEADER}=k3y" in args
