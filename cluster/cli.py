"""`cluster`: the command line of boltpipe."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Nothing boltpipe runs may fetch weights or tokenizers from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cluster.commands import (  # noqa: E402
    bench, chat, credentials, discover, doctor, down, generate, import_gguf, logs, plan, status, up, worker,
)
from cluster.errors import USER_ERRORS  # noqa: E402

COMMANDS = (up, down, status, logs, plan, discover, generate, chat, bench, import_gguf, worker, doctor, credentials)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster", description="boltpipe: serve one language model across several machines."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return args.run(args) or 0
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
