"""Every ``aln`` command's ``--help`` renders (argparse %-formats help texts, so one stray
percent sign breaks a command's help)."""

import argparse

from aln.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, name: str = "aln"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_help_renders():
    seen = []
    for name, parser in _parsers(build_parser()):
        assert parser.format_help(), name
        seen.append(name)
    assert {"aln bench", "aln pacs watch", "aln predict"} <= set(seen)
