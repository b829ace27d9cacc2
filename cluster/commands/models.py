"""`cluster models`: what Ollama's store holds, and which of it boltpipe can serve (model: {ollama: NAME})."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from deploy.text_table import format_rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models Ollama pulled and whether boltpipe serves them")
    p.add_argument("--ollama-dir", type=Path, help="Ollama's model store (default: $OLLAMA_MODELS, ~/.ollama/models, "
                                                   "/usr/share/ollama/.ollama/models)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def _servable(gguf: Path | None) -> tuple[str, str, str]:
    """(architecture, tensor types, verdict) read from the GGUF header alone."""
    from node.gguf import GGUFImportError
    from node.gguf.families import FAMILIES
    from node.gguf.reader import read_gguf
    from node.gguf.types import GGMLType, ggml_type_name

    if gguf is None:
        return "-", "-", "no: not a GGUF model (safetensors-based manifest)"
    try:
        header = read_gguf(gguf)
    except GGUFImportError as exc:
        return "-", "-", f"no: {exc}"
    arch = header.architecture or "?"
    kinds = Counter(ggml_type_name(t.ggml_type) for t in header.tensors.values())
    types = ", ".join(f"{k} x{n}" for k, n in kinds.most_common())
    unsupported = sorted({ggml_type_name(t.ggml_type) for t in header.tensors.values()
                          if t.ggml_type not in GGMLType.SUPPORTED})
    if arch not in FAMILIES:
        return arch, types, f"no: the GGUF importer knows {', '.join(FAMILIES)}"
    if unsupported:
        return arch, types, f"no: tensor types {', '.join(unsupported)}"
    return arch, types, "yes"


def run(args: argparse.Namespace) -> int:
    from node.gguf import ollama

    rows = []
    for model in ollama.list_models(args.ollama_dir):
        arch, types, verdict = _servable(model.gguf)
        rows.append({"name": model.name, "size_bytes": model.size, "architecture": arch, "tensor_types": types,
                     "servable": verdict})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no Ollama models in {', '.join(str(d) for d in ollama.store_dirs(args.ollama_dir))}")
        return 0
    table = [("name", "size", "architecture", "tensors", "boltpipe serves it")]
    table += [(r["name"], f"{r['size_bytes'] / 1e9:.2f} GB", r["architecture"], r["tensor_types"], r["servable"])
              for r in rows]
    print(format_rows(table))
    return 0
