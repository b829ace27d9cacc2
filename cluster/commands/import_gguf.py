"""`cluster import-gguf FILE OUTDIR`: a GGUF file to an mlx-lm model directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-gguf", help="convert a GGUF file into a model directory the workers load")
    p.add_argument("file", type=Path, help="the .gguf file")
    p.add_argument("outdir", type=Path, help="the directory to create")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from node.gguf import import_gguf

    summary = import_gguf(args.file, args.outdir, progress=not args.no_progress)
    print(f"imported {args.file} -> {args.outdir}: {summary}")
    return 0
