"""``aln build-repo``, ``aln serve`` and ``aln predict``: the served ensemble."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aln.commands import UsageError
from aln.serving.occlusion import DEFAULT_GRID, GRID_BOUNDS
from aln.serving.server import ALLOCATORS, DEFAULT_ALLOCATOR
from aln.serving.spec import ENGINE_FORMATS, PROFILES, spec_default

DEFAULT_REPO = Path("runs/model_repository")


def register(commands: Any) -> None:
    """Add the serving subcommands to the ``aln`` parser."""
    build = commands.add_parser(
        "build-repo",
        help="generate a servable Triton model repository from a checkpoint",
        description="Generate aln_ensemble (preprocess -> backbones -> fusion_head) from a "
        "checkpoint (exported on the way, parity enforced) or an `aln export` folder (its engines "
        "and precision as exported).",
    )
    build.add_argument("checkpoint", type=Path, help="checkpoint or export folder")
    build.add_argument("--out", type=Path, default=DEFAULT_REPO)
    build.add_argument("--profile", choices=PROFILES, default=spec_default("profile"))
    build.add_argument(
        "--format",
        dest="engine_format",
        choices=ENGINE_FORMATS,
        help="engine format (default: an export folder's own, else "
        f"{spec_default('engine_format')}; tensorrt: production profile, GPU)",
    )
    build.add_argument(
        "--force-precision",
        action="store_true",
        help="serve bf16 engines on a CPU without native bf16 (they then run in fp32)",
    )
    build.add_argument(
        "--preprocess-instances", type=int, default=spec_default("preprocess_instances")
    )
    build.add_argument(
        "--backbone-instances",
        type=int,
        default=spec_default("backbone_instances"),
        help="instances of each engine",
    )
    build.add_argument(
        "--max-batch", type=int, default=spec_default("max_batch"), help="engines' max batch size"
    )
    build.add_argument(
        "--preprocess-max-batch",
        type=int,
        default=spec_default("preprocess_max_batch"),
        help="preprocess (and ensemble) max batch size; 1 keeps studies from waiting on "
        "batch-mates",
    )
    build.add_argument(
        "--max-queue-size",
        type=int,
        default=spec_default("max_queue_size"),
        help="per-model queue bound; 0 (default) sheds by --queue-timeout-s only",
    )
    build.add_argument(
        "--queue-delay-us",
        dest="max_queue_delay_us",
        type=int,
        default=spec_default("max_queue_delay_us"),
    )
    build.add_argument(
        "--queue-timeout-s",
        type=float,
        default=spec_default("queue_timeout_us") / 1e6,
        help="longest wait in a model's queue before a request is rejected",
    )
    build.add_argument(
        "--engine-threads",
        type=int,
        default=spec_default("engine_threads"),
        help="engine threads per engine instance (embedded)",
    )
    build.add_argument(
        "--engine-spinning",
        action="store_true",
        help="let idle engine threads spin-wait (off: they sleep and leave the cores to "
        "preprocessing)",
    )
    build.set_defaults(handler=run_build_repo)

    serve = commands.add_parser(
        "serve",
        help="start the Triton server bundled in nvidia-pytriton on a repository",
        description="Start tritonserver, wait until aln_ensemble is ready, print the endpoints, "
        "stop cleanly on Ctrl-C or SIGTERM.",
    )
    _server_arguments(serve)
    serve.add_argument(
        "--allocator",
        choices=sorted(ALLOCATORS),
        help="malloc for tritonserver and its backend processes (jemalloc, tcmalloc: preloaded; "
        f"default {DEFAULT_ALLOCATOR}, glibc for OpenVINO engines: see docs/reliability.md)",
    )
    serve.add_argument(
        "--drain-timeout-s",
        type=float,
        default=DRAIN_TIMEOUT_S,
        help="on SIGTERM, how long to let admitted requests finish before stopping",
    )
    serve.set_defaults(handler=run_serve)

    predict = commands.add_parser(
        "predict",
        help="send one study to a running server and print the prediction",
        description="Exit status 2 with the server's message on invalid input, 3 when the "
        "server is unreachable.",
    )
    predict.add_argument("file", type=Path, help="primary DICOM")
    predict.add_argument("--lesion", type=float, nargs=2, required=True, metavar=("X", "Y"))
    predict.add_argument("--bbox", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    predict.add_argument(
        "--aux",
        type=Path,
        help="auxiliary DICOM (default: the primary); --laterality/--view/--spacing-mm apply to "
        "it only when it is the primary's file",
    )
    predict.add_argument(
        "--aux-lesion",
        type=float,
        nargs=2,
        metavar=("X", "Y"),
        help="auxiliary region centre (enables the auxiliary branch)",
    )
    predict.add_argument("--aux-bbox", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    predict.add_argument("--clinical", type=Path, required=True, help="clinical record JSON")
    predict.add_argument("--laterality", choices=("L", "R"))
    predict.add_argument("--view", choices=("CC", "MLO"))
    predict.add_argument("--spacing-mm", type=float)
    predict.add_argument("--url", default="localhost:8001")
    predict.add_argument("--timeout-s", type=float, default=30.0)
    predict.add_argument(
        "--shared-memory",
        action="store_true",
        help="send the DICOM through Triton system shared memory (the server on this host); "
        "falls back to gRPC bytes with a warning when the server cannot map it",
    )
    predict.add_argument(
        "--explain",
        type=Path,
        metavar="PNG",
        help="also compute an occlusion map with the served engines (aln_explain) and write the "
        "crop with the map over it here",
    )
    predict.add_argument(
        "--explain-grid",
        type=int,
        help=f"cells per side of the map (default {DEFAULT_GRID}; {GRID_BOUNDS[0]} to "
        f"{GRID_BOUNDS[1]})",
    )
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(handler=run_predict)


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM): gRPC over TLS")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument("--tls-client-ca", type=Path, help="CA of client certificates: mutual TLS")
    parser.add_argument("--log", type=Path, help="write the server log here (default: stdout)")


def run_build_repo(args: argparse.Namespace) -> int:
    """Generate the repository."""
    from aln.export.repository import build_repository

    overrides = {
        "profile": args.profile,
        "preprocess_instances": args.preprocess_instances,
        "backbone_instances": args.backbone_instances,
        "max_batch": args.max_batch,
        "preprocess_max_batch": args.preprocess_max_batch,
        "max_queue_size": args.max_queue_size,
        "queue_timeout_us": int(args.queue_timeout_s * 1e6),
        "max_queue_delay_us": args.max_queue_delay_us,
        "engine_threads": args.engine_threads,
        "engine_spinning": args.engine_spinning,
    }
    if args.engine_format is not None:
        overrides["engine_format"] = args.engine_format
    if args.force_precision:
        overrides["force_precision"] = True
    try:
        out, spec = build_repository(args.checkpoint, args.out, overrides)
    except ValueError as exc:  # an invalid spec field, named by RepositorySpec
        raise UsageError(str(exc)) from exc
    print(
        f"wrote {out} ({spec.profile} profile, {spec.engine_label} engines, max batch "
        f"{spec.max_batch}, "
        f"{spec.preprocess_instances} preprocess instances)"
    )
    return 0


def server_config(args: argparse.Namespace) -> Any:
    """A :class:`aln.serving.server.ServerConfig` from the serve arguments."""
    from aln.serving.server import ServerConfig

    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        tls = (args.tls_cert, args.tls_key, args.tls_client_ca)
    return ServerConfig(
        args.repo,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        host=args.host,
        grpc_tls=tls,
        allocator=args.allocator,
        supervise_stubs=True,
    )


def start_server(config: Any, log: Path | None) -> Any:
    """Start the embedded server and wait until the ensemble is ready.

    Raises:
        RepositoryError: The repository holds no ensemble.
        ServerStartError: The server exited or was not ready in time.
        MissingComponentError: The ``nvidia-pytriton`` wheel is not installed.
    """
    from aln.preprocessing import contract
    from aln.serving.server import EmbeddedServer

    server = EmbeddedServer(config, log=log).start()
    try:
        server.wait_until_ready(contract.ENSEMBLE)
    except BaseException:
        server.stop()
        raise
    return server


def ready_line(config: Any) -> str:
    """The line that tells an operator (and a supervisor) the ensemble serves, with endpoints."""
    scheme = "grpcs" if config.grpc_tls else "grpc"
    return (
        f"aln_ensemble ready: {scheme}://{config.host}:{config.grpc_port}  "
        f"http://{config.host}:{config.http_port}/v2  "
        f"metrics http://{config.host}:{config.metrics_port}/metrics"
    )


DRAIN_TIMEOUT_S = 30.0
"""How long a stop waits for admitted requests: above the default queue timeout (5 s) and the
slowest request measured (a few seconds at full load)."""


def serve_until_stopped(server: Any, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> int:
    """Print the ready line, block until Ctrl-C or SIGTERM, drain, then stop the server.

    ``aln`` turns SIGTERM into KeyboardInterrupt from its first instruction on. A stop first
    drains (:meth:`aln.serving.server.EmbeddedServer.drain`): readiness false at once, new
    requests refused, the admitted ones finished (up to ``drain_timeout_s``).
    """
    try:
        # printed inside the try: a SIGTERM right after the line is handled here, never lost
        print(ready_line(server.config), flush=True)
        server.process.wait()
        print(f"tritonserver exited with status {server.process.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("draining: not ready, finishing the requests already admitted...", flush=True)
        try:
            drained = server.drain(drain_timeout_s)
        except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: stop now
            drained = False
        print(
            "stopping tritonserver..."
            if drained
            else f"stopping tritonserver (not drained within {drain_timeout_s:.0f} s)...",
            flush=True,
        )
        return 0
    finally:
        server.stop()


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    return serve_until_stopped(start_server(server_config(args), args.log), args.drain_timeout_s)


def run_predict(args: argparse.Namespace) -> int:
    """Send one study and print the answer."""
    from aln.client import AlnClient, ImageInput
    from aln.preprocessing.contract import ImageOptions, auxiliary_options

    try:
        clinical = json.loads(args.clinical.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"Cannot read clinical record '{args.clinical}': {exc}") from exc
    overrides = ImageOptions(args.laterality, args.view, args.spacing_mm)
    primary = ImageInput(
        args.file, tuple(args.lesion), tuple(args.bbox) if args.bbox else None, **vars(overrides)
    )
    auxiliary = None
    if args.aux_lesion:
        aux_file = args.aux or args.file
        same = aux_file == args.file or Path(aux_file).resolve() == Path(args.file).resolve()
        aux_overrides = auxiliary_options(overrides, ImageOptions(), same_dicom=same)
        auxiliary = ImageInput(
            aux_file,
            tuple(args.aux_lesion),
            tuple(args.aux_bbox) if args.aux_bbox else None,
            **vars(aux_overrides),
        )
    explained = None
    with AlnClient(args.url, timeout_s=args.timeout_s, shared_memory=args.shared_memory) as client:
        if args.explain is None:
            prediction = client.predict(primary, clinical, auxiliary=auxiliary)
        else:
            from aln.commands.overlay import write_overlay

            explanation = client.explain(
                primary, clinical, auxiliary=auxiliary, grid=args.explain_grid
            )
            prediction = explanation.prediction
            write_overlay(explanation, args.explain)
            explained = {"grid": explanation.grid, "overlay": str(args.explain)}
    print_prediction(prediction, as_json=args.json, explanation=explained)
    return 0


def decision_line(prediction: Any) -> str:
    """The decision with the figures it was validated at, in one line."""
    point = prediction.operating_point
    if point is None:
        return f"{prediction.decision.value} (the model has no validated operating point)"

    def figure(name: str) -> str:
        p = getattr(point, name)
        if p.value is None:
            return f"{name} n/a"
        return f"{name} {p.value:.2f} ({p.ci_low:.2f}-{p.ci_high:.2f})"

    return (
        f"{prediction.decision.value} at threshold {point.threshold:.3f} ({point.rule}); on "
        f"{point.chosen_on} (n={point.cases}, prevalence {point.prevalence:.2f}): "
        f"{figure('sensitivity')}, {figure('npv')}"
    )


def print_prediction(
    prediction: Any, *, as_json: bool, explanation: dict[str, Any] | None = None
) -> None:
    """Print a prediction (and where its explanation went) as JSON or as a short report."""
    point = prediction.operating_point
    if as_json:
        answer = {
            "probability": prediction.probability,
            "logit": prediction.logit,
            "decision": prediction.decision.value,
            "operating_point": None if point is None else point.to_dict(),
            "model_name": prediction.model_name,
            "model_version": prediction.model_version,
            "provenance": prediction.provenance,
        }
        if explanation is not None:
            answer["explanation"] = explanation
        print(json.dumps(answer, indent=2))
        return
    print(
        f"P(axillary nodes positive after NAT) = {prediction.probability:.4f} "
        f"(logit {prediction.logit:+.4f})"
    )
    print(f"decision: {decision_line(prediction)}")
    if explanation is not None:
        side, where = explanation["grid"], explanation["overlay"]
        print(f"explanation: {side} x {side} map in {where}")
    print(f"model {prediction.model_name} {prediction.model_version}")
    print("provenance:")
    print(json.dumps(prediction.provenance, indent=2))
