r"""Locust load test of the served ensemble over gRPC, through the client SDK.

Headless, writing CSV and HTML reports (``--host`` is the gRPC ``host:port``)::

    locust -f benchmarks/locustfile.py --headless --host 127.0.0.1:8001 \\
        --users 8 --spawn-rate 4 --run-time 60s --stop-timeout 60 \\
        --csv benchmarks/results/locust --html benchmarks/results/locust.html \\
        --aln-syntaxes explicit,jpeg2000,rle --aln-aux-share 0.5 --aln-invalid-share 0.1

Each simulated user holds one :class:`aln.client.AlnClient` (gRPC made gevent-cooperative below)
and sends, in a seeded random mix, valid studies (transfer syntaxes from ``--aln-syntaxes``, a
share ``--aln-aux-share`` with an auxiliary region) and a share ``--aln-invalid-share`` of invalid
ones. Every call is reported to locust's statistics under its kind: ``valid/<syntax>[+aux]``
requests succeed or fail with the client's error; ``invalid/<kind>`` requests are *expected* to
fail with INVALID_ARGUMENT and are reported as failures carrying that error, so a run's failure
table shows at a glance that each invalid kind got the right answer (an invalid study the server
accepted is reported as ``accepted an invalid study``). SDK retries are off so locust sees every
refusal. ``--stop-timeout`` defaults to 60 s here (locust's own default, 0, cancels the requests
in flight when the run ends, which can crash the embedded Triton 2.51 server).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists: gRPC must yield to gevent, not block it

from locust import User, events, task  # noqa: E402

from aln.benchmarks.workload import synthetic  # noqa: E402
from aln.client import AlnClient, AlnClientError, ImageInput, RetryPolicy, Study  # noqa: E402

_STUDIES: dict[str, Study] = {}
_INVALID: dict[str, Study] = {}


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _arguments(parser: Any) -> None:
    # Let users finish the request in flight when the run ends: locust's default kills them, which
    # cancels their gRPC calls, and Triton 2.51 (the embedded server) can crash when a call is
    # cancelled while a Python-backend model works on it (README, "Known issue").
    parser.set_defaults(stop_timeout="60")
    parser.add_argument("--aln-syntaxes", default="explicit,jpeg2000", help="transfer syntaxes")
    parser.add_argument("--aln-aux-share", type=float, default=0.5, help="share with auxiliary")
    parser.add_argument("--aln-invalid-share", type=float, default=0.1, help="share invalid")
    parser.add_argument("--aln-timeout-s", type=float, default=60.0, help="per-request deadline")
    parser.add_argument("--aln-seed", type=int, default=0, help="seed of the request mix")
    parser.add_argument(
        "--aln-shared-memory",
        action="store_true",
        help="send the DICOM through Triton system shared memory (locust on the server's host)",
    )


def invalid_studies(valid: Study) -> dict[str, Study]:
    """Kinds of invalid request built from one valid study; each must get INVALID_ARGUMENT."""
    dicom = valid.primary.dicom_bytes()
    record = dict(valid.clinical) if not isinstance(valid.clinical, str) else {}
    return {
        "truncated_dicom": Study(ImageInput(dicom[:4096], valid.primary.lesion), record),
        "not_dicom": Study(ImageInput(b"%PDF-1.7 " * 64, valid.primary.lesion), record),
        "lesion_outside_image": Study(ImageInput(dicom, (1e6, 1e6)), record),
        "clinical_missing_field": Study(
            valid.primary, {k: v for k, v in record.items() if k != "age_years"}
        ),
        "clinical_not_json": Study(valid.primary, "{not json"),
    }


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _build_workload(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    syntaxes = tuple(options.aln_syntaxes.split(","))
    with_aux = synthetic(syntaxes, auxiliary=True, per_syntax=1, seed=options.aln_seed)
    for syntax, study in zip(syntaxes, with_aux.studies, strict=True):
        _STUDIES[f"valid/{syntax}"] = Study(study.primary, study.clinical)
        _STUDIES[f"valid/{syntax}+aux"] = study
    _INVALID.update(invalid_studies(with_aux.studies[0]))


class AlnGrpcUser(User):
    """One integration client: sends studies back to back (no think time)."""

    def on_start(self) -> None:
        """Open this user's client (retries off: locust counts every refusal)."""
        options = self.environment.parsed_options
        self.rng = random.Random(options.aln_seed + id(self))
        self.client = AlnClient(
            self.host or "localhost:8001",
            timeout_s=options.aln_timeout_s,
            retry=RetryPolicy(max_attempts=1),
            shared_memory=options.aln_shared_memory,
        )

    def on_stop(self) -> None:
        """Close the client."""
        self.client.close()

    def _pick(self) -> tuple[str, Study, bool]:
        options = self.environment.parsed_options
        if self.rng.random() < options.aln_invalid_share:
            kind = self.rng.choice(sorted(_INVALID))
            return f"invalid/{kind}", _INVALID[kind], False
        syntax = self.rng.choice(options.aln_syntaxes.split(","))
        aux = self.rng.random() < options.aln_aux_share
        name = f"valid/{syntax}{'+aux' if aux else ''}"
        return name, _STUDIES[name], True

    @task
    def predict(self) -> None:
        """Send one study and report it to locust's statistics."""
        name, study, valid = self._pick()
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            prediction = self.client.predict(
                study.primary, study.clinical, auxiliary=study.auxiliary
            )
            length = len(json.dumps(prediction.provenance))
            if not valid:
                exception = AssertionError("accepted an invalid study")
        except AlnClientError as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )
