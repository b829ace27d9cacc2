"""`cluster worker` / `python -m node`: run one worker process."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys

import grpc

from node import sysinfo
from node.advertise import Advertiser
from node.blas import blas_in_use
from node.cluster_auth import ClusterAuth, RequireSecret, TlsMaterial, is_loopback_address, server_credentials
from node.lenient_decode import LenientDecoding
from node.metrics_endpoint import start_metrics_server
from node.server import WorkerService
from proto import boltpipe_pb2_grpc as pb_grpc
from proto import WORKER_READY_MARKER, grpc_options

EXIT_PORT_IN_USE = 3

log = logging.getLogger("boltpipe.worker")


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=50061, help="gRPC port (0 picks a free one)")
    parser.add_argument("--name", default=socket.gethostname(), help="node name reported to the coordinator")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone")
    parser.add_argument("--idle-timeout", type=float, default=300.0, help="seconds before an idle session is freed")
    parser.add_argument("--no-advertise", action="store_true",
                        help="do not announce this worker by Bonjour (it always is when listening beyond loopback)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve Prometheus metrics on this port (0: none)")
    parser.add_argument("--config", help="a JSON file of these settings (written by `cluster up` on deployed nodes); "
                        "options given on the command line win")
    parser.add_argument("--secret-file", help="the cluster secret every call must carry (a file only you can read)")
    parser.add_argument("--tls-dir", help="a directory with the cluster's ca.pem and this worker's worker.pem and "
                        "worker.key: mutual TLS on links beyond loopback")
    parser.add_argument("--log-level", default="INFO")
    # Set by `cluster up` in the --config file only (a command line is visible to every user).
    for hidden in ("--secret", "--tls-ca", "--tls-cert", "--tls-key"):
        parser.add_argument(hidden, default="", help=argparse.SUPPRESS)
    parser.add_argument("--tls-on-loopback", action="store_true", help=argparse.SUPPRESS)


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent process %d is gone; stopping", parent_pid)
            stop.set()
        await asyncio.sleep(1.0)


def worker_auth(args: argparse.Namespace) -> ClusterAuth:
    secret = args.secret
    if not secret and args.secret_file:
        try:
            secret = open(args.secret_file).read().strip()
        except OSError as exc:
            raise SystemExit(f"error: cannot read the cluster secret {args.secret_file}: {exc.strerror}")
    tls = None
    if args.tls_cert:
        tls = TlsMaterial(args.tls_ca.encode(), args.tls_cert.encode(), args.tls_key.encode())
    elif args.tls_dir:
        try:
            tls = TlsMaterial(*(open(os.path.join(args.tls_dir, f), "rb").read()
                                for f in ("ca.pem", "worker.pem", "worker.key")))
        except OSError as exc:
            raise SystemExit(f"error: --tls-dir {args.tls_dir}: {exc.strerror}: {exc.filename}")
    return ClusterAuth(secret, tls, tls_on_loopback=args.tls_on_loopback)


async def serve(args: argparse.Namespace) -> int:
    auth = worker_auth(args)
    interceptors = ([RequireSecret(auth.secret)] if auth.secret else []) + [LenientDecoding()]
    server = grpc.aio.server(options=grpc_options(), interceptors=interceptors)
    service = WorkerService(args.name, idle_timeout_s=args.idle_timeout, listen_host=args.host, auth=auth)
    pb_grpc.add_WorkerServicer_to_server(service, server)
    address = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    tls = auth.uses_tls(address)
    if not auth.secret:
        log.warning("no cluster secret (--secret-file): anyone who can reach this worker can drive it")
    if not tls and not is_loopback_address(address):
        log.warning("listening beyond loopback without TLS (--tls-dir): steps and prompts cross the network in clear")
    try:
        port = server.add_secure_port(address, server_credentials(auth.tls)) if tls else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        print(f"error: cannot listen on {args.host}:{args.port}: the address is in use or not available", file=sys.stderr)
        return EXIT_PORT_IN_USE
    await server.start()
    service.start_background()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_parent(args.parent_pid, stop)) if args.parent_pid else None
    advertiser = None
    if not args.no_advertise:
        advertiser = Advertiser(args.name, args.host, port, sysinfo.mlx_backends())
        await advertiser.start()
    if args.metrics_port:
        try:
            start_metrics_server(args.metrics_port, args.host, args.name, service)
            service.metrics_port = args.metrics_port
        except OSError as exc:  # metrics are worth a warning, not a worker that cannot serve
            log.warning("no metrics endpoint: cannot listen on %s:%d: %s", args.host, args.metrics_port, exc.strerror)
    print(f"{WORKER_READY_MARKER} name={args.name} port={port} pid={os.getpid()}", flush=True)
    log.info("worker %s listening on %s:%d (BLAS: %s)", args.name, args.host, port, blas_in_use())
    await stop.wait()
    log.info("worker %s stopping", args.name)
    if watcher:
        watcher.cancel()
    if advertiser is not None:
        await advertiser.stop()
    await server.stop(grace=1.0)
    await service.stop_background()
    return 0


CONFIG_KEYS = ("host", "port", "name", "idle_timeout", "no_advertise", "metrics_port", "log_level", "secret",
               "tls_ca", "tls_cert", "tls_key", "tls_on_loopback")


def apply_config_file(args: argparse.Namespace) -> argparse.Namespace:
    """Settings from --config, for every option left at its default on the command line."""
    if not args.config:
        return args
    try:
        with open(args.config) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: cannot read the worker configuration {args.config}: {exc}")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise SystemExit(f"error: {args.config}: unknown settings {', '.join(unknown)} (known: {', '.join(CONFIG_KEYS)})")
    fresh = argparse.ArgumentParser()
    add_worker_arguments(fresh)
    defaults = vars(fresh.parse_args([]))
    for key, value in config.items():
        if getattr(args, key) == defaults[key]:
            setattr(args, key, value)
    return args


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(serve(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node", description="Run a boltpipe worker.")
    add_worker_arguments(parser)
    return run(apply_config_file(parser.parse_args(argv)))
