"""The README's client and command-line examples, run as written against a real server.

Every fenced block preceded by ``<!-- runs-in-tests: ... -->`` runs here, in order, in a fresh
folder holding the repository's ``examples/``, with ``localhost:8001`` pointed at the test server:
``console`` blocks command by command (each ``$`` line; the lines after it are output that must
appear), ``python`` blocks with ``exec``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- runs-in-tests:"
README_URL = "localhost:8001"


def marked_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every marked fenced block, in README order."""
    pattern = re.compile(re.escape(MARK) + r"[^\n]*\n```(\w+)\n(.*?)\n```", re.S)
    return [(m.group(1), m.group(2)) for m in pattern.finditer(text)]


def console_commands(body: str) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` of a console block."""
    commands: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
    return commands


def test_the_readme_marks_its_runnable_examples():
    blocks = marked_blocks((ROOT / "README.md").read_text())
    assert {language for language, _ in blocks} == {"console", "python"}
    assert sum(len(console_commands(b)) for lang, b in blocks if lang == "console") >= 5


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_examples_run_as_written(served, workdir):
    url = served[2]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ran = 0
    for language, body in marked_blocks((ROOT / "README.md").read_text()):
        if language == "console":
            for command, expected in console_commands(body):
                args = shlex.split(command.replace(README_URL, url))
                assert args[0] == "aln", command
                result = subprocess.run(
                    [sys.executable, "-m", "aln", *args[1:]],
                    capture_output=True,
                    text=True,
                    check=False,
                    cwd=workdir,
                    env=env,
                )
                failing = any(line.startswith(f"aln {args[1]}: error:") for line in expected)
                assert (result.returncode != 0) == failing, (command, result.stderr)
                for line in expected:
                    assert line in result.stdout + result.stderr, (command, line, result)
                ran += 1
        else:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(body.replace(README_URL, url), "README.md", "exec"), {})
            probability = float(out.getvalue().split()[0])
            assert 0.0 < probability < 1.0
            ran += 1
    assert ran >= 6
