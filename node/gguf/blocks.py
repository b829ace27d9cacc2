"""ggml block formats to MLX's affine quantization (weight, scales, biases; group size 32).

Exact where ggml's format is itself affine over groups of 32 (value = scale * q + bias, q unsigned):

  Q4_0  [d f16][16 B: low nibbles q0..15, high q16..31]           value = d * (q - 8)
  Q4_1  [d f16][m f16][16 B, same nibbles]                          value = d * q + m
  Q5_0  [d f16][qh u32: bit j = high bit of q_j][16 B nibbles]      value = d * (q - 16)
  Q5_1  [d f16][m f16][qh u32][16 B nibbles]                        value = d * q + m
  Q8_0  [d f16][32 x int8]                                          value = d * q
  Q4_K  256 values: [d f16][dmin f16][12 B: 8 x (6-bit scale, 6-bit min)][128 B nibbles]
        sub-block s of 32: value = d * sc_s * q - dmin * m_s; nibbles per 64 values: low = first 32
  Q5_K  as Q4_K plus [32 B qh: bit s of byte i = high bit of value i of sub-block s]

Q4_K / Q5_K scales d * sc (and d_min * m) are exact in float32; in float16 (mlx-lm's usual scale
type, a third smaller in memory) they round to about 5e-4 of themselves. The rest (Q2_K, Q3_K, Q6_K,
IQ4_NL, IQ4_XS) has no affine group-32 form: those tensors are dequantized with the `gguf` package
(bit-exact with ggml) and quantized again by MLX (node/gguf/types.py says to how many bits, and why).
"""

from __future__ import annotations

import numpy as np

from .bitpack import pack_bits
from .types import GGMLType

GROUP_SIZE = 32

FLOAT_DTYPES = {GGMLType.F32: ("F32", np.float32), GGMLType.F16: ("F16", np.float16),
                GGMLType.BF16: ("BF16", np.uint16)}


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    """(rows, row_bytes) uint8 -> (rows, blocks_per_row, block_bytes)."""
    rows, row_bytes = raw.shape
    return raw.reshape(rows, row_bytes // block_bytes, block_bytes)


def _f16(field: np.ndarray) -> np.ndarray:
    """(rows, nb, 2) uint8 -> (rows, nb) float32 (from float16)."""
    return np.ascontiguousarray(field).view(np.float16)[..., 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(rows, nb, 16) bytes -> (rows, nb, 32): low nibbles are values 0..15, high ones 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """(rows, nb, 4) bytes of a u32 -> (rows, nb, 32): bit j is the fifth bit of value j."""
    return np.unpackbits(np.ascontiguousarray(qh), axis=-1, bitorder="little")


Affine = tuple[np.ndarray, np.ndarray, np.ndarray]  # q (rows, cols) uint8, scale and bias (rows, groups) float32


def _per_group(q: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> Affine:
    rows = q.shape[0]
    return q.reshape(rows, -1), scale.reshape(rows, -1), bias.reshape(rows, -1)


def q4_0(raw: np.ndarray) -> Affine:
    b = _blocks(raw, 18)
    d = _f16(b[..., 0:2])
    return _per_group(_nibbles(b[..., 2:]), d, d * -8)


def q4_1(raw: np.ndarray) -> Affine:
    b = _blocks(raw, 20)
    return _per_group(_nibbles(b[..., 4:]), _f16(b[..., 0:2]), _f16(b[..., 2:4]))


def q5_0(raw: np.ndarray) -> Affine:
    b = _blocks(raw, 22)
    d = _f16(b[..., 0:2])
    return _per_group(_nibbles(b[..., 6:]) | (_high_bits(b[..., 2:6]) << 4), d, d * -16)


def q5_1(raw: np.ndarray) -> Affine:
    b = _blocks(raw, 24)
    return _per_group(_nibbles(b[..., 8:]) | (_high_bits(b[..., 4:8]) << 4), _f16(b[..., 0:2]), _f16(b[..., 2:4]))


def q8_0(raw: np.ndarray) -> Affine:
    b = _blocks(raw, 34)
    d = _f16(b[..., 0:2])
    # int8 q -> uint8 q + 128 is a flip of the top bit; the bias takes the 128 back.
    return _per_group(b[..., 2:] ^ 0x80, d, d * -128)


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, nb, 12) -> 6-bit scales and mins (rows, nb, 8) of the eight sub-blocks.

    Bytes 0-3 hold scales 0-3 in their low 6 bits, 4-7 mins 0-3; bytes 8-11 hold the low 4 bits of
    scale / min 4-7, whose top 2 bits are the top bits of bytes 0-3 / 4-7."""
    p = packed.astype(np.uint8)
    first, second, rest = p[..., 0:4], p[..., 4:8], p[..., 8:12]
    scales = np.concatenate([first & 0x3F, (rest & 0x0F) | ((first >> 6) << 4)], axis=-1)
    mins = np.concatenate([second & 0x3F, (rest >> 4) | ((second >> 6) << 4)], axis=-1)
    return scales.astype(np.float32), mins.astype(np.float32)


def _k_values(qs: np.ndarray) -> np.ndarray:
    """(rows, nb, 128) nibble bytes -> (rows, nb, 8, 32): per 32 bytes, low nibbles then high."""
    rows, nb, _ = qs.shape
    chunks = qs.reshape(rows, nb, 4, 1, 32)
    return np.concatenate([chunks & 0x0F, chunks >> 4], axis=3).reshape(rows, nb, 8, 32)


def _k_affine(q: np.ndarray, b: np.ndarray) -> Affine:
    d, dmin = _f16(b[..., 0:2])[..., None], _f16(b[..., 2:4])[..., None]
    sc, m = _k_scales(b[..., 4:16])
    return _per_group(q, d * sc, -(dmin * m))


def q4_k(raw: np.ndarray) -> Affine:
    b = _blocks(raw, 144)
    return _k_affine(_k_values(b[..., 16:144]), b)


def q5_k(raw: np.ndarray) -> Affine:
    b = _blocks(raw, 176)
    rows, nb, _ = b.shape
    high = np.unpackbits(b[..., 16:48], axis=-1, bitorder="little").reshape(rows, nb, 32, 8)
    high = np.moveaxis(high, -1, -2)                                  # (rows, nb, sub-block, value)
    return _k_affine(_k_values(b[..., 48:176]) | (high << 4), b)


def mxfp4_to_mlx(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MXFP4 blocks (an E8M0 scale byte, then 32 E2M1 codes as Q4_0 lays nibbles) -> MLX's mxfp4
    (weight uint32, scales uint8). The codes and the scale mean the same in both; only the nibble
    order moves."""
    b = _blocks(raw, 17)
    rows = b.shape[0]
    return pack_bits(_nibbles(b[..., 1:]).reshape(rows, -1), 4), np.ascontiguousarray(b[..., 0])


# ggml type -> (what it becomes: bits of the MLX form, the function giving its affine groups).
EXACT = {
    GGMLType.Q4_0: (4, q4_0), GGMLType.Q4_1: (4, q4_1), GGMLType.Q5_0: (5, q5_0), GGMLType.Q5_1: (5, q5_1),
    GGMLType.Q8_0: (8, q8_0), GGMLType.Q4_K: (4, q4_k), GGMLType.Q5_K: (5, q5_k),
}


def to_mlx(q: np.ndarray, scale: np.ndarray, bias: np.ndarray, bits: int,
           scale_dtype=np.float16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MLX's (weight uint32, scales, biases) arrays of affine groups."""
    return pack_bits(q, bits), scale.astype(scale_dtype), bias.astype(scale_dtype)


def requantize(values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float rows -> MLX's own affine quantization (group 32, float16 scales)."""
    import mlx.core as mx

    w, scales, biases = mx.quantize(mx.array(values, dtype=mx.float16), group_size=GROUP_SIZE, bits=bits)
    return np.array(w), np.array(scales), np.array(biases)


def quantized_shapes(bits: int, rows: int, cols: int, scale_dtype: str = "F16",
                     mode: str = "affine") -> dict[str, tuple[tuple[int, int], str]]:
    """Output suffix -> (shape, safetensors dtype) of the MLX arrays for a rows x cols tensor."""
    if mode == "mxfp4":
        return {"weight": ((rows, cols * bits // 32), "U32"), "scales": ((rows, cols // GROUP_SIZE), "U8")}
    return {
        "weight": ((rows, cols * bits // 32), "U32"),
        "scales": ((rows, cols // GROUP_SIZE), scale_dtype),
        "biases": ((rows, cols // GROUP_SIZE), scale_dtype),
    }
