"""`cluster worker`: run a worker process on this machine (same as `python -m node`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from node.worker_main import add_worker_arguments, apply_config_file, run

    p = sub.add_parser("worker", help="run a boltpipe worker on this machine")
    add_worker_arguments(p)
    p.set_defaults(run=lambda args: run(apply_config_file(args)))
