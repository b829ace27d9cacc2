"""`cluster import-gguf FILE OUTDIR`: a GGUF file (or a model Ollama pulled: `ollama:NAME[:TAG]`) to an
mlx-lm model directory."""

from __future__ import annotations

import argparse
from pathlib import Path

OLLAMA_PREFIX = "ollama:"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-gguf", help="convert a GGUF file into a model directory the workers load")
    p.add_argument("file", help="the .gguf file, or ollama:NAME[:TAG] for a model Ollama pulled (read in place)")
    p.add_argument("outdir", type=Path, help="the directory to create")
    p.add_argument("--ollama-dir", type=Path, help="Ollama's model store (default: $OLLAMA_MODELS, ~/.ollama/models, "
                                                   "/usr/share/ollama/.ollama/models)")
    p.add_argument("--exact-scales", action="store_true",
                   help="keep Q4_K / Q5_K scales in float32: exact, a third more scale memory (default: float16)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from node.gguf import import_gguf, ollama

    source = Path(args.file)
    if args.file.startswith(OLLAMA_PREFIX):
        source = ollama.find(args.file.removeprefix(OLLAMA_PREFIX), args.ollama_dir).gguf
    summary = import_gguf(source, args.outdir, progress=not args.no_progress, exact_scales=args.exact_scales)
    what = "already imported" if summary.skipped else f"{summary.tensors} tensors, {summary.bytes_written / 1e6:.1f} MB"
    print(f"imported {args.file} ({summary.architecture}, {summary.num_layers} layers) -> {args.outdir}: {what} "
          f"in {summary.elapsed_s:.1f} s")
    return 0
