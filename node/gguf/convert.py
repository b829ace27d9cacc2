"""Stream planned tensors from the GGUF into safetensors shards, a block of rows at a time."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .blocks import EXACT, FLOAT_DTYPES, mxfp4_to_mlx, requantize, to_mlx
from .safetensors_writer import SafetensorsWriter
from .types import GGMLType
from .weights import PlannedTensor, unpermute_rows

SHARD_BYTES = 2 * 1024**3
WORK_BYTES = 32 * 1024**2  # working bytes of rows handled per step; bounds memory on any model size
WORK_BYTES_PER_VALUE = 16  # the widest per-value working form: bitpack's 64-bit words, shifted and reduced


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


def _shifted(values: np.ndarray, kind: int, shift: float) -> np.ndarray:
    """values + shift, in the tensor's own dtype (bfloat16 is held as uint16 bits)."""
    if kind != GGMLType.BF16:
        return (values.astype(np.float32) + shift).astype(values.dtype)
    as_f32 = (values.astype(np.uint32) << 16).view(np.float32) + np.float32(shift)
    bits = as_f32.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def _convert_rows(p: PlannedTensor, chunk: np.ndarray) -> tuple[np.ndarray, ...]:
    """Source rows -> the output arrays' rows: a float tensor as it is; a block-quantized one as MLX's
    (weight, scales, biases), repacked where the format is affine over 32, else dequantized by the
    `gguf` package and quantized again by MLX."""
    kind = p.source.ggml_type
    if not p.quantized:
        values = chunk.view(FLOAT_DTYPES[kind][1])
        return (_shifted(values, kind, p.shift) if p.shift else values,)
    if kind == GGMLType.MXFP4:
        return mxfp4_to_mlx(chunk)
    if kind in EXACT:
        bits, repack = EXACT[kind]
        scale_dtype = np.float32 if p.outputs[1].dtype == "F32" else np.float16
        return to_mlx(*repack(chunk), bits, scale_dtype)
    import gguf

    values = gguf.quants.dequantize(chunk, gguf.GGMLQuantizationType(kind)).reshape(chunk.shape[0], -1)
    return requantize(values, GGMLType.REQUANTIZED_BITS[kind])


def _read(fh: BinaryIO, offset: int, nbytes: int) -> np.ndarray:
    """Bytes read into this process (not a file mapping: mapped pages would stay resident and count
    against the import's memory for as long as the file is open)."""
    buf = bytearray(nbytes)
    fh.seek(offset)
    if fh.readinto(buf) != nbytes:
        raise OSError(f"short read at offset {offset} of {fh.name}")
    return np.frombuffer(buf, dtype=np.uint8)


def _convert_one(p: PlannedTensor, fh: BinaryIO, writer: SafetensorsWriter, on_bytes: Callable[[int], None]) -> None:
    info = p.source
    # Matrices are handled by rows (an expert stack's rows are all its experts' rows); a vector is one
    # row, except a q/k bias, whose elements are the per-row values that must follow the permutation.
    rows = p.rows
    row_nbytes = info.nbytes // rows
    perm = unpermute_rows(rows, p.heads) if p.heads else None
    # A q/k tensor is read whole (rows move across the tensor); anything else a block of rows at a time.
    whole = _read(fh, info.offset, info.nbytes).reshape(rows, -1) if perm is not None else None
    # Rows per step bound the working copies a block of rows needs (dequantized floats, packed words).
    step = max(1, WORK_BYTES // (WORK_BYTES_PER_VALUE * max(1, math.prod(info.shape) // rows)))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        if whole is not None:
            chunk = whole[perm[start:stop]]  # rows are independent in every format: un-permuting is a gather
        else:
            chunk = _read(fh, info.offset + start * row_nbytes, (stop - start) * row_nbytes).reshape(stop - start, -1)
        for spec, part in zip(p.outputs, _convert_rows(p, chunk)):
            row_bytes = spec.nbytes // rows
            on_bytes(writer.write(spec.name, start * row_bytes, part))


def write_shards(
    planned: list[PlannedTensor], gguf_path: Path, dst: Path, on_bytes: Callable[[int], None],
    shard_bytes: int = SHARD_BYTES,
) -> int:
    """Write model*.safetensors (+ index when sharded) into dst; returns bytes written."""
    shards = group_shards(planned, shard_bytes)
    names = shard_names(len(shards))
    weight_map: dict[str, str] = {}
    total = 0
    for name, group in zip(names, shards):
        specs = [s for p in group for s in p.outputs]
        with SafetensorsWriter(dst / name, specs) as writer, open(gguf_path, "rb", buffering=0) as fh:
            for p in group:
                _convert_one(p, fh, writer, on_bytes)
            total += writer.total_bytes
        weight_map.update({s.name: name for s in specs})
    if len(names) > 1:
        index = {"metadata": {"total_size": sum(p.out_bytes for p in planned)}, "weight_map": weight_map}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total
