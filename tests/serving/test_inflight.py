from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from aln.serving import inflight


def test_a_marker_holds_the_batch_while_it_runs_and_is_blank_after(tmp_path):
    marker = inflight.Marker(tmp_path / "preprocess_0_1")
    assert inflight.read(tmp_path, "preprocess_0_1") == []
    with marker.working_on(["a1b2", "c3d4"]):
        assert inflight.read(tmp_path, "preprocess_0_1") == ["a1b2", "c3d4"]
    assert inflight.read(tmp_path, "preprocess_0_1") == []
    assert inflight.read(tmp_path, "never_started") == []


def test_the_marker_outlives_a_process_killed_while_working(tmp_path):
    """The point of it: a native crash leaves what the instance was working on readable."""
    script = textwrap.dedent(
        """
        import os, signal
        from aln.serving import inflight
        with inflight.Marker.for_instance("backbone_primary_0_0").working_on(["feed", "beef"]):
            os.kill(os.getpid(), signal.SIGSEGV)
        """
    )
    env = {**os.environ, inflight.FOLDER_VARIABLE: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, check=False)
    assert done.returncode == -signal.SIGSEGV
    assert inflight.read(tmp_path, "backbone_primary_0_0") == ["feed", "beef"]


def test_a_reloaded_instance_takes_over_its_marker_blank(tmp_path):
    with inflight.Marker(tmp_path / "fusion_head_0_0").working_on(["dead"]):
        inflight.Marker(tmp_path / "fusion_head_0_0")  # the new generation starts
        assert inflight.read(tmp_path, "fusion_head_0_0") == []


def test_ids_are_cleaned_and_cut_before_they_reach_a_marker_or_a_log(tmp_path):
    marker = inflight.Marker(tmp_path / "x")
    hostile = "id with spaces\nand a newline" + "7" * 100
    with marker.working_on([hostile, ""]):
        ids = inflight.read(tmp_path, "x")
    assert ids == [inflight.clean(hostile), inflight.NO_ID]
    assert len(ids[0]) == 64 and all(33 <= ord(c) <= 126 for c in ids[0])
    with marker.working_on([f"{i:060d}" for i in range(100)]):  # a batch too big to fit
        assert len(" ".join(inflight.read(tmp_path, "x"))) <= inflight.MARKER_BYTES


def test_without_the_folder_variable_nothing_is_written(monkeypatch):
    monkeypatch.delenv(inflight.FOLDER_VARIABLE, raising=False)
    assert inflight.Marker.for_instance("preprocess_0_0") is None
    with inflight.working_on(None, ["x"]):
        pass


def test_a_quarantined_id_is_known_with_its_crash_and_others_are_not(tmp_path):
    quarantine = inflight.Quarantine(tmp_path)
    assert quarantine.cause("a1b2") is None  # no list yet
    inflight.Quarantine(tmp_path).add(["a1b2", ""], "model instance 'preprocess_0_1' died (x)")
    assert quarantine.cause("a1b2") == "model instance 'preprocess_0_1' died (x)"
    assert quarantine.cause("c3d4") is None
    assert quarantine.cause("") is None  # a request without an id is never quarantined
    inflight.Quarantine(tmp_path).add(["c3d4"], "model instance 'preprocess_0_0' died (y)")
    assert quarantine.cause("c3d4") == "model instance 'preprocess_0_0' died (y)"  # re-read
