"""`cluster`: the command line of boltpipe."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Nothing boltpipe runs may fetch weights or tokenizers from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Subcommand -> its module (cluster/commands/). Only the module of the command being run is
# imported: `cluster down` or `cluster status` need neither MLX nor the tokenizers that `up` loads.
COMMANDS = {name: f"cluster.commands.{name.replace('-', '_')}" for name in (
    "up", "down", "status", "logs", "plan", "discover", "generate", "chat", "bench", "import-gguf", "models",
    "worker", "doctor", "credentials")}


def _command_named(argv: list[str]) -> str | None:
    """The subcommand on the command line (the first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or of `only` (enough to parse a command line naming it)."""
    parser = argparse.ArgumentParser(
        prog="cluster", description="boltpipe: serve one language model across several machines."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command_named(argv)
    if command == "worker" and argv == sys.argv[1:]:
        # This process is a worker: the system OpenBLAS on Linux, set up before MLX is imported
        # (by running this same command line again; node/blas_preload.py).
        from node.blas_preload import reexec_with_blas

        reexec_with_blas()
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from cluster.errors import USER_ERRORS  # what a person can fix: one clear message, no traceback

        if not isinstance(exc, USER_ERRORS):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
