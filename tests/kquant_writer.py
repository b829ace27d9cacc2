"""A small Q4_K / Q6_K quantizer for test fixtures (the `gguf` package dequantizes K-quants but
cannot write them). Simple rounding, not llama.cpp's search for the best scales: what matters here
is that the bytes are valid Q4_K / Q6_K, which tests/test_gguf_types.py checks against `gguf`'s own
dequantization. Rows must be whole 256-value super-blocks."""

from __future__ import annotations

import numpy as np

QK_K = 256


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).reshape(-1, 1).view(np.uint8)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """(rows, cols) float -> (rows, cols / 256 * 144) uint8 of Q4_K blocks."""
    rows, cols = x.shape
    blocks = x.astype(np.float32).reshape(-1, 8, 32)                      # super-blocks of 8 sub-blocks
    lo, hi = blocks.min(axis=-1), blocks.max(axis=-1)
    lo = np.minimum(lo, 0)                                                # value = d*sc*q - dmin*m, m >= 0
    scale, mins = (hi - lo) / 15, -lo
    d = np.maximum(scale.max(axis=-1), 1e-12) / 63
    dmin = np.maximum(mins.max(axis=-1), 1e-12) / 63
    d16, dmin16 = d.astype(np.float16).astype(np.float32), dmin.astype(np.float16).astype(np.float32)
    sc = np.clip(np.rint(scale / d16[:, None]), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(mins / dmin16[:, None]), 0, 63).astype(np.uint8)
    step = np.maximum(d16[:, None] * sc, 1e-12)[..., None]
    q = np.clip(np.rint((blocks + (dmin16[:, None] * m)[..., None]) / step), 0, 15).astype(np.uint8)
    # 6-bit scales and mins, 12 bytes: 0-3 / 4-7 hold sc / m of sub-blocks 0-3 plus the top bits of 4-7.
    packed = np.zeros((blocks.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = (m[:, 0:4] & 0x3F) | ((m[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    # per 64 values: 32 bytes, low nibbles the first sub-block, high nibbles the second
    pairs = q.reshape(-1, 4, 2, 32)
    qs = (pairs[:, :, 0, :] | (pairs[:, :, 1, :] << 4)).reshape(-1, 128)
    out = np.concatenate([_f16_bytes(d16), _f16_bytes(dmin16), packed, qs], axis=-1)
    return out.reshape(rows, cols // QK_K * 144)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """(rows, cols) float -> (rows, cols / 256 * 210) uint8 of Q6_K blocks (value = d * sc * (q - 32))."""
    rows, cols = x.shape
    groups = x.astype(np.float32).reshape(-1, 16, 16)                     # 16 scales of 16 values
    sc_f = np.abs(groups).max(axis=-1) / 31
    d = np.maximum(np.abs(sc_f).max(axis=-1), 1e-12) / 127
    d16 = d.astype(np.float16).astype(np.float32)
    sc = np.clip(np.rint(sc_f / d16[:, None]), -128, 127).astype(np.int8)
    step = np.where(sc == 0, 1.0, d16[:, None] * sc)[..., None]
    q = (np.clip(np.rint(groups / step), -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 128)  # two halves
    low, high = q & 0x0F, q >> 4
    # per half: 64 bytes of low nibbles (values 0-63 low, 64-127 high), 32 bytes of 2-bit highs (x4)
    ql = (low[:, :, 0:64] | (low[:, :, 64:128] << 4)).reshape(-1, 128)
    h = high.reshape(-1, 2, 4, 32)
    qh = (h[:, :, 0] | (h[:, :, 1] << 2) | (h[:, :, 2] << 4) | (h[:, :, 3] << 6)).reshape(-1, 64)
    out = np.concatenate([ql, qh, sc.view(np.uint8), _f16_bytes(d16)], axis=-1)
    return out.reshape(rows, cols // QK_K * 210)
