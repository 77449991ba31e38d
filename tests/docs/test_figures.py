"""Every measured figure the documentation quotes comes from a committed result file.

A paragraph, list item or table that quotes measurements carries a source comment naming the
result files it comes from::

    <!-- source: benchmarks/results/compare-cpu-2cores.json -->

This test finds every number with a unit of measurement (studies/s, img/s, ms, core-ms,
GFLOP/s, x, %, MB, GB, s), and in a block that names its sources every decimal number, in
``README.md``, ``benchmarks/README.md`` and ``docs/reliability.md`` (outside code) and checks that a number in one of the named files rounds to it at the precision
quoted (a percentage may be stored as a fraction). A figure without a source, or whose value is
in none of its files, fails with the line and the figure.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "benchmarks/README.md", "docs/reliability.md")
SOURCE = re.compile(r"<!--\s*source:\s*(.*?)\s*-->")
UNITS = r"studies/s|img/s|images/s|core-ms|ms|GFLOP/s|%|MB|GB|s"
FIGURE = re.compile(rf"(?<![\w.\-/])(\d+(?:\.\d+)?)(?:\s?({UNITS})|(x))(?![\w/])")
CODE = re.compile(r"`[^`]*`")
CONFIDENCE = re.compile(r"\b95% ?(?:CI|confidence|Wilson|bootstrap|bands)|Wilson 95%")
"""A confidence level, not a measurement."""
DECIMAL = re.compile(r"(?<![\w.\-/])(\d+\.\d+)(?![\w.%/])")
"""In a block that names its sources, every decimal number is a figure too ("6.1 against 6.0
studies/s" quotes two)."""
VERSION = re.compile(r"\b(?:Triton|Python|torch|OpenJPEG|opset|pytriton|version|v)\s+\d+(?:\.\d+)+")
NOT_MEASURED = re.compile(r"<!--\s*not-measured\s*-->")


def blocks(text: str) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` of each paragraph, list item or table, outside code fences.

    A line holding only a source comment belongs to the block that follows it.
    """
    fenced = False
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        new_item = line.lstrip().startswith(("- ", "* ", "#")) and not line.startswith("  ")
        only_comments = all(SOURCE.fullmatch(c.strip()) for c in current)
        if not line.strip() or (new_item and not (current and only_comments)):
            if current and not (only_comments and line.strip() == ""):
                yield start, "\n".join(current)
                current = []
            elif current and only_comments:
                continue  # a source comment, a blank line: it still heads the next block
            current, start = ([line], number) if line.strip() else ([], number + 1)
            continue
        if not current:
            start = number
        current.append(line)
    if current:
        yield start, "\n".join(current)


def numbers(value: object) -> Iterator[float]:
    """Every number in a JSON document (strings that are numbers too)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, str):
        for match in re.finditer(r"-?\d+(?:\.\d+)?", value):
            yield float(match.group())
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)


def load(path: Path) -> list[float]:
    if path.suffix == ".json":
        return list(numbers(json.loads(path.read_text())))
    return list(numbers(path.read_text()))


def matches(quoted: str, unit: str, values: list[float]) -> bool:
    """Whether some value rounds to the quoted figure at its precision."""
    decimals = len(quoted.partition(".")[2])
    target = float(quoted)
    half = 0.5 * 10**-decimals + 1e-9
    scales = (1.0, 100.0) if unit == "%" else (1.0,)
    return any(
        math.isfinite(v) and abs(v * scale - target) <= half for v in values for scale in scales
    )


def figures() -> Iterator[tuple[str, int, str, str, list[str]]]:
    """``(doc, line, figure, unit, source files)`` for every quoted measurement."""
    for doc in DOCS:
        for line, block in blocks((ROOT / doc).read_text()):
            if NOT_MEASURED.search(block):
                continue
            sources = [s.strip() for m in SOURCE.finditer(block) for s in m.group(1).split(",")]
            prose = VERSION.sub("", CONFIDENCE.sub("", CODE.sub("", SOURCE.sub("", block))))
            seen = set()
            for match in FIGURE.finditer(prose):
                seen.add(match.start(1))
                yield doc, line, match.group(1), match.group(2) or match.group(3), sources
            if sources:
                for match in DECIMAL.finditer(prose):
                    if match.start(1) not in seen:
                        yield doc, line, match.group(1), "", sources


ALL = list(figures())


def test_the_docs_quote_figures_and_name_their_sources():
    assert len(ALL) > 50
    named = {s for *_, sources in ALL for s in sources}
    missing = sorted(s for s in named if not (ROOT / s).is_file())
    assert not missing, f"source files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_quoted_figure_is_in_a_named_result_file(doc):
    cache: dict[str, list[float]] = {}
    wrong = []
    for where, line, figure, unit, sources in ALL:
        if where != doc:
            continue
        if not sources:
            wrong.append(f"{doc}:{line}: {figure} {unit} has no <!-- source: ... --> comment")
            continue
        values = [v for s in sources for v in cache.setdefault(s, load(ROOT / s))]
        if not matches(figure, unit, values):
            wrong.append(f"{doc}:{line}: {figure} {unit} is in none of {', '.join(sources)}")
    assert not wrong, "\n".join(wrong)
