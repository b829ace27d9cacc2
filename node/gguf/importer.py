"""import_gguf: a Llama GGUF file -> an mlx-lm-loadable model directory (see package docstring)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .config import check_layers, quantization_block, tensor_facts
from .convert import SHARD_BYTES, write_shards
from .errors import GGUFImportError
from .marker import (
    IMPORTER_VERSION, existing_output_state, hash_source, read_marker, refuse_other_import, same_source,
    write_marker,
)
from .reader import TensorInfo, read_gguf
from .rope_factors import llama3_rope_scaling
from .tokenizer import build_tokenizer, write_tokenizer
from .families import build_config, family_of
from .weights import plan_tensors


@dataclass(frozen=True)
class ImportSummary:
    source: Path
    output: Path
    architecture: str
    num_layers: int
    tensors: int  # GGUF tensors converted
    bytes_written: int  # safetensors bytes (0 when skipped)
    elapsed_s: float
    skipped: bool = False  # OUTDIR already held this import


def import_gguf(src: Path, dst: Path, *, progress: bool = True, shard_bytes: int = SHARD_BYTES,
                exact_scales: bool = False) -> ImportSummary:
    """Convert `src` into `dst`; raises GGUFImportError for anything a person must fix.
    `exact_scales`: keep Q4_K / Q5_K scales in float32 (exact; a third more scale memory)."""
    t0 = time.monotonic()
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    # Everything that can reject the file runs before any byte is written.
    gguf = read_gguf(src)
    arch, family = family_of(gguf.metadata, src.name)
    config = build_config(gguf.metadata, arch, family, **tensor_facts(gguf.tensors, gguf.metadata, arch))
    if family.model_type == "llama" and (freqs := gguf.tensors.get("rope_freqs.weight")) is not None:
        config["rope_scaling"] = llama3_rope_scaling(_read_f32(src, freqs), config["rope_theta"], config["head_dim"])
    planned = plan_tensors(gguf.tensors, arch, config, unpermute_qk=family.unpermute_qk, exact_scales=exact_scales,
                           norm_shift=family.norm_shift)
    check_layers(planned, config["num_hidden_layers"], arch)
    if (quant := quantization_block(planned)) is not None:
        config["quantization"] = quant
        config["quantization_config"] = quant  # mlx-lm writes both; some tools read the second
    build_tokenizer(gguf.metadata)  # fails early on an unsupported tokenizer

    state = existing_output_state(dst)
    source = hash_source(src, progress)
    if state == "previous":
        marker = read_marker(dst) or {}
        if not same_source(marker, source):
            raise refuse_other_import(dst, marker, src)
        if marker.get("importer_version") == IMPORTER_VERSION and marker.get("exact_scales", False) == exact_scales:
            return ImportSummary(src, dst, arch, config["num_hidden_layers"], len(planned), 0,
                                 time.monotonic() - t0, skipped=True)

    dst.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling directory and rename at the end: an interrupted import leaves no half model
    # under the name the caller (and its cache check) looks at.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.importing-", dir=dst.parent))
    try:
        total = sum(p.out_bytes for p in planned)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"importing {src.name}",
                  file=sys.stderr, disable=not progress) as bar:
            written = write_shards(planned, src, tmp, bar.update, shard_bytes)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_tokenizer(gguf.metadata, tmp, config.get("max_position_embeddings"))
        write_marker(tmp, source, {
            "architecture": arch, "num_layers": config["num_hidden_layers"], "tensors": len(planned),
            "bytes_written": written, "exact_scales": exact_scales,
        })
        _replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportSummary(src, dst, arch, config["num_hidden_layers"], len(planned), written,
                         time.monotonic() - t0)


def _read_f32(src: Path, info: TensorInfo):
    import numpy as np

    from .types import GGMLType

    if info.ggml_type != GGMLType.F32:
        raise GGUFImportError(f"tensor {info.name!r} is {info.type_name}; llama.cpp writes it as F32")
    return np.fromfile(src, dtype=np.float32, count=info.nbytes // 4, offset=info.offset)


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Move the finished import into place; an old import of the same file is swapped out."""
    if not dst.exists():
        os.replace(tmp, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, old)
    try:
        os.replace(tmp, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["GGUFImportError", "ImportSummary", "import_gguf"]
