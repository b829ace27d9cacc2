"""MLX's packing of b-bit integers into uint32 words.

MLX stores a row of b-bit values as one little-endian bit stream: value j occupies bits
[b*j, b*j + b) of the row, read through uint32 words (so for 4 bits byte k holds values 2k in its
low nibble and 2k+1 in its high one). Eight values always fill exactly b bytes, which is how the
packing is computed here, for any b from 1 to 8.
"""

from __future__ import annotations

import numpy as np


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """(rows, cols) unsigned values < 2**bits -> (rows, cols * bits / 32) uint32; cols % 32 == 0."""
    rows, cols = q.shape
    if cols % 32:
        raise ValueError(f"{cols} values per row do not fill whole 32-bit words at {bits} bits")
    if bits == 8:
        return np.ascontiguousarray(q, dtype=np.uint8).reshape(rows, -1).view(np.uint32)
    shifts = (np.arange(8, dtype=np.uint64) * bits).reshape(1, 1, 8)
    groups = q.reshape(rows, cols // 8, 8).astype(np.uint64) << shifts
    words = np.bitwise_or.reduce(groups, axis=-1)                # (rows, cols/8) of 8*bits used bits
    packed = words.view(np.uint8).reshape(rows, cols // 8, 8)[..., :bits]
    return np.ascontiguousarray(packed).reshape(rows, cols * bits // 8).view(np.uint32)


def unpack_bits(words: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """The inverse of pack_bits, for tests and checks."""
    rows = words.shape[0]
    raw = np.ascontiguousarray(words).view(np.uint8).reshape(rows, cols // 8, bits)
    padded = np.zeros((rows, cols // 8, 8), dtype=np.uint8)
    padded[..., :bits] = raw
    stream = padded.view(np.uint64)[..., 0]
    shifts = (np.arange(8, dtype=np.uint64) * bits).reshape(1, 1, 8)
    return ((stream[..., None] >> shifts) & np.uint64((1 << bits) - 1)).astype(np.uint8).reshape(rows, cols)
