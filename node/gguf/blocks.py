"""Repack ggml block-quantized rows into MLX affine (weight, scales, biases) arrays, losslessly.

The three classic ggml formats are all affine over groups of 32 values, which is exactly what MLX's
`affine` mode stores: value = scale * q + bias with unsigned q. Only the nibble order and the sign
convention differ, so no value is re-quantized:

  Q4_0  [d f16][16 bytes: low nibbles = q0..q15, high = q16..q31]  value = d * (q - 8)
  Q4_1  [d f16][m f16][16 bytes, same nibble layout]                value = d * q + m
  Q8_0  [d f16][32 x int8]                                          value = d * q

MLX packs element j of a row into uint32 word j // (32/bits) at bit (j % (32/bits)) * bits, i.e. in
little-endian byte order: for 4 bits, byte k holds elements 2k (low nibble) and 2k+1 (high nibble).
All inputs are rows of whole blocks; rows are independent, so callers may pass any subset of rows.
"""

from __future__ import annotations

import numpy as np

from .types import GGMLType

GROUP_SIZE = 32

FLOAT_DTYPES = {GGMLType.F32: ("F32", np.float32), GGMLType.F16: ("F16", np.float16), GGMLType.BF16: ("BF16", np.uint16)}


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    """(rows, row_bytes) uint8 -> (rows, blocks_per_row, block_bytes)."""
    rows, row_bytes = raw.shape
    return raw.reshape(rows, row_bytes // block_bytes, block_bytes)


def _f16(field: np.ndarray) -> np.ndarray:
    """(rows, nb, 2) uint8 -> (rows, nb) float16 (copy, so the view is aligned)."""
    return np.ascontiguousarray(field).view(np.float16)[..., 0]


def _pack_nibbles(qs: np.ndarray) -> np.ndarray:
    """ggml's (rows, nb, 16) nibble bytes -> MLX 4-bit words (rows, nb * 4) uint32."""
    low, high = qs & 0x0F, qs >> 4  # elements 0..15 and 16..31 of each block
    values = np.concatenate([low, high], axis=-1)  # (rows, nb, 32) in element order
    packed = values[..., 0::2] | (values[..., 1::2] << 4)
    rows = qs.shape[0]
    return np.ascontiguousarray(packed).reshape(rows, -1).view(np.uint32)


def repack_q4_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _blocks(raw, 18)
    d = _f16(b[..., 0:2])
    return _pack_nibbles(b[..., 2:]), d, (d.astype(np.float32) * -8).astype(np.float16)


def repack_q4_1(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _blocks(raw, 20)
    return _pack_nibbles(b[..., 4:]), _f16(b[..., 0:2]), _f16(b[..., 2:4])


def repack_q8_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _blocks(raw, 34)
    d = _f16(b[..., 0:2])
    # int8 q -> uint8 q + 128 is a flip of the top bit; the bias takes back the 128.
    q = np.ascontiguousarray(b[..., 2:] ^ 0x80).reshape(raw.shape[0], -1).view(np.uint32)
    return q, d, (d.astype(np.float32) * -128).astype(np.float16)


REPACKERS = {GGMLType.Q4_0: repack_q4_0, GGMLType.Q4_1: repack_q4_1, GGMLType.Q8_0: repack_q8_0}


def quantized_shapes(ggml_type: int, rows: int, cols: int) -> dict[str, tuple[tuple[int, int], str]]:
    """Output suffix -> (shape, safetensors dtype) of the MLX triplet for a rows x cols tensor."""
    bits = GGMLType.QUANTIZED_BITS[ggml_type]
    return {
        "weight": ((rows, cols * bits // 32), "U32"),
        "scales": ((rows, cols // GROUP_SIZE), "F16"),
        "biases": ((rows, cols // GROUP_SIZE), "F16"),
    }
