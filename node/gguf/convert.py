"""Stream planned tensors from the GGUF into safetensors shards, a block of rows at a time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .blocks import FLOAT_DTYPES, REPACKERS
from .safetensors_writer import SafetensorsWriter
from .weights import PlannedTensor, unpermute_rows

SHARD_BYTES = 2 * 1024**3
CHUNK_BYTES = 64 * 1024**2  # source bytes handled per step; bounds memory on any model size


def group_shards(planned: list[PlannedTensor], shard_bytes: int = SHARD_BYTES) -> list[list[PlannedTensor]]:
    """Consecutive groups of at most ~shard_bytes (a tensor is never split across files)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for p in planned:
        if shards[-1] and size + p.out_bytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(p)
        size += p.out_bytes
    return shards


def shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def _convert_one(p: PlannedTensor, mm: np.memmap, writer: SafetensorsWriter, on_bytes: Callable[[int], None]) -> None:
    info = p.source
    # Matrices are handled by rows; a vector is one row, except a q/k bias, whose elements are the
    # per-row values that must follow the same permutation.
    rows = info.shape[1] if len(info.shape) > 1 else info.shape[0] if p.heads else 1
    raw = mm[info.offset: info.offset + info.nbytes].reshape(rows, -1)
    perm = unpermute_rows(rows, p.heads) if p.heads else None
    step = max(1, CHUNK_BYTES // max(1, raw.shape[1]))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        # Rows are independent in every format here, so un-permuting is a gather of source rows.
        chunk = np.asarray(raw[perm[start:stop]] if perm is not None else raw[start:stop])
        if p.quantized:
            parts = REPACKERS[info.ggml_type](chunk)
        else:
            parts = (chunk.view(FLOAT_DTYPES[info.ggml_type][1]),)
        for spec, part in zip(p.outputs, parts):
            row_bytes = spec.nbytes // rows
            on_bytes(writer.write(spec.name, start * row_bytes, part))


def write_shards(
    planned: list[PlannedTensor], gguf_path: Path, dst: Path, on_bytes: Callable[[int], None],
    shard_bytes: int = SHARD_BYTES,
) -> int:
    """Write model*.safetensors (+ index when sharded) into dst; returns bytes written."""
    mm = np.memmap(gguf_path, dtype=np.uint8, mode="r")
    shards = group_shards(planned, shard_bytes)
    names = shard_names(len(shards))
    weight_map: dict[str, str] = {}
    total = 0
    for name, group in zip(names, shards):
        specs = [s for p in group for s in p.outputs]
        with SafetensorsWriter(dst / name, specs) as writer:
            for p in group:
                _convert_one(p, mm, writer, on_bytes)
            total += writer.total_bytes
        weight_map.update({s.name: name for s in specs})
    if len(names) > 1:
        index = {"metadata": {"total_size": sum(p.out_bytes for p in planned)}, "weight_map": weight_map}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    del mm
    return total
