"""The ``aln`` command line: one command, one subcommand per job.

Exit status: 0 success; 1 an internal failure (a server that would not start, an unexpected
server error); 2 bad input or arguments (one line naming the tag or argument, the value and what
is allowed); 3 the server is unreachable; 4 an optional component this command needs is not
installed here (the message says which and how to get it).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from aln import __version__
from aln.client.errors import AlnClientError, InvalidInputError, ModelUnavailableError
from aln.commands import UsageError, bench, data, demo, deploy, modelling, pacs, serving, training
from aln.deploy.balancer import BalancerError
from aln.deploy.spec import DeploySpecError
from aln.errors import MissingComponentError
from aln.model.errors import ModelError
from aln.pacs.errors import PacsError
from aln.preprocessing.errors import ConfigurationError, PreprocessingError
from aln.serving.errors import ServingError
from aln.training.errors import CohortError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_MISSING_COMPONENT = 4

BAD_INPUT = (
    PreprocessingError,
    ConfigurationError,
    ModelError,
    InvalidInputError,
    CohortError,
    UsageError,
    PacsError,
    DeploySpecError,
    BalancerError,
)
"""Errors about what the user gave: one line, exit status 2."""

EXTRAS = {
    "pydicom": "preprocessing",
    "pylibjpeg": "preprocessing",
    "glymur": "preprocessing",
    "threadpoolctl": "preprocessing",
    "PIL": "preprocessing",
    "torch": "model",
    "timm": "model",
    "safetensors": "model",
    "onnx": "export",
    "onnxruntime": "export",
    "openvino": "export",
    "nncf": "export",
    "pytriton": "serve",
    "scipy": "training",
    "matplotlib": "training",
    "tqdm": "training",
    "locust": "benchmarks",
    "highdicom": "pacs",
    "dicomweb_client": "pacs",
    "requests": "pacs",
    "yaml": "deploy",
    "simpy": "benchmarks",
}
"""Top-level module -> the extra of ``aln-triton`` that installs it."""

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (each command module registers its subcommands)."""
    parser = argparse.ArgumentParser(
        prog="aln",
        description="Predict axillary lymph-node status after neoadjuvant therapy from a "
        "baseline mammogram and clinical record (Triton-served Swin V2 ensemble). "
        "Demo weights have no clinical validity.",
    )
    parser.add_argument("--version", action="version", version=f"aln-triton {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, modelling, serving, training, demo, bench, pacs, deploy):
        module.register(commands)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    SIGTERM is handled like Ctrl-C from the first instruction on, so a server started by
    ``aln serve`` or ``aln demo`` is always stopped cleanly, even when the signal arrives while
    it is still starting.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except MissingComponentError as exc:
        print(f"aln {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_MISSING_COMPONENT
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"aln {args.command}: error: this command needs the module '{exc.name}', which is not "
            f"installed here; install it with pip install 'aln-triton[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_MISSING_COMPONENT
    except BAD_INPUT as exc:
        print(f"aln {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ServingError as exc:
        print(f"aln {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ModelUnavailableError as exc:
        print(
            f"aln {args.command}: error: server unreachable or model unavailable: {exc}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except AlnClientError as exc:
        print(f"aln {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
