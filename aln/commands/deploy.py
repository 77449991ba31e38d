"""``aln deploy``: the deployment beyond one machine, rendered from one spec."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from aln.deploy.spec import GPU_TYPES, DeploySpec, measured_batch_ms


def register(commands: Any) -> None:
    """Add ``aln deploy``."""
    deploy = commands.add_parser(
        "deploy",
        help="container, Kubernetes and KServe objects for a production repository",
        description="Render the container recipe (NGC Triton + this project), a Deployment, "
        "Service, HPA on Triton's queue time, PodDisruptionBudget, ServiceMonitor, Prometheus "
        "Adapter rule, and a KServe ServingRuntime + InferenceService, from one spec.",
    )
    actions = deploy.add_subparsers(dest="action", required=True, metavar="ACTION")
    render = actions.add_parser("render", help="write the build context and the manifests")
    render.add_argument(
        "--repository",
        type=Path,
        required=True,
        help="the model repository of aln build-repo --profile production",
    )
    render.add_argument("--out", type=Path, required=True, help="folder to write (replaced)")
    render.add_argument("--image", required=True, help="the image the cluster pulls (with a tag)")
    timing = render.add_mutually_exclusive_group(required=True)
    timing.add_argument(
        "--engine-batch-ms",
        type=float,
        help="one backbone batch's compute time on the GPU type, measured",
    )
    timing.add_argument(
        "--measured",
        type=Path,
        help="an aln bench latency result from the GPU type (its backbone compute per batch)",
    )
    default = {f.name: f.default for f in fields(DeploySpec)}
    render.add_argument("--name", default=default["name"])
    render.add_argument("--namespace", default=default["namespace"])
    render.add_argument("--min-replicas", type=int, default=default["min_replicas"])
    render.add_argument("--max-replicas", type=int, default=default["max_replicas"])
    render.add_argument(
        "--gpu-type", default=default["gpu_type"], help=f"one of {', '.join(GPU_TYPES)}"
    )
    render.add_argument("--gpus-per-replica", type=int, default=default["gpus_per_replica"])
    render.add_argument(
        "--queue-time-target-ms",
        type=float,
        default=default["queue_time_target_ms"],
        help="the autoscaler's target: queued time per study across the composing models",
    )
    render.add_argument("--startup-s", type=int, default=default["startup_s"])
    render.add_argument("--cpu-per-replica", type=int, default=default["cpu_per_replica"])
    render.add_argument("--memory-gib", type=int, default=default["memory_gib"])
    render.add_argument("--triton-image", default=default["triton_image"])
    render.add_argument("--storage-uri", default=default["storage_uri"])
    render.set_defaults(handler=run_render)

    balancer = actions.add_parser(
        "balancer",
        help="nginx balancing gRPC calls over aln serve replicas on this machine",
        description="Run Debian's nginx as a gRPC load balancer (least connections, passive "
        "health checks) over the given replicas until Ctrl-C; clients use its address.",
    )
    balancer.add_argument(
        "--replica",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a replica's gRPC address (repeat for each)",
    )
    balancer.add_argument("--port", type=int, default=0, help="port to listen on (loopback)")
    balancer.add_argument(
        "--fail-timeout-s",
        type=int,
        default=5,
        help="after a failed connection, how long a replica gets no calls",
    )
    balancer.set_defaults(handler=run_balancer)


def run_render(args: argparse.Namespace) -> int:
    """Check the spec, then write everything."""
    from aln.deploy.render import render

    batch_ms = args.engine_batch_ms
    if batch_ms is None:
        batch_ms = measured_batch_ms(args.measured, args.gpu_type)
    spec = DeploySpec(
        image=args.image,
        engine_batch_ms=batch_ms,
        name=args.name,
        namespace=args.namespace,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        gpu_type=args.gpu_type,
        gpus_per_replica=args.gpus_per_replica,
        queue_time_target_ms=args.queue_time_target_ms,
        startup_s=args.startup_s,
        cpu_per_replica=args.cpu_per_replica,
        memory_gib=args.memory_gib,
        triton_image=args.triton_image,
        storage_uri=args.storage_uri,
    )
    for path in render(spec, args.repository, args.out):
        print(path)
    return 0


def run_balancer(args: argparse.Namespace) -> int:
    """Run nginx over the replicas until interrupted."""
    import time

    from aln.deploy.balancer import GrpcBalancer

    with GrpcBalancer(args.replica, args.port, args.fail_timeout_s) as balancer:
        print(f"balancing gRPC over {', '.join(args.replica)} at {balancer.url} (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping nginx (calls in flight finish)...")
    return 0
