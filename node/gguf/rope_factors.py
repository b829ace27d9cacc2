"""Llama 3.1-style RoPE scaling, recovered from the per-dimension factors llama.cpp stores.

llama.cpp's converter turns Hugging Face's `rope_scaling: {rope_type: llama3, factor, low_freq_factor,
high_freq_factor, original_max_position_embeddings}` into `rope_freqs.weight` (one factor per pair of
dimensions: 1 for short wavelengths, `factor` for long ones, a smooth blend between) and keeps none of
the four numbers. They are found again by trying the values Meta's releases use, and the ones that
reproduce every stored factor are written back into config.json, where mlx-lm applies them.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np

from .errors import GGUFImportError

_OLD_CONTEXTS = [2**k for k in range(5, 21)]
# Only old_context / low and old_context / high matter, so the same factors have many spellings: low = 1
# (every Meta release) is tried first, which makes the answer the one the checkpoint's config had.
_LOW_FACTORS = [1.0, 0.5, 2.0, 4.0]
_HIGH_FACTORS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def llama3_factors(base: float, head_dim: int, factor: float, low: float, high: float, old_context: int) -> np.ndarray:
    """What llama.cpp's converter writes for these parameters."""
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_context / wavelen - low) / (high - low)
    blend = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old_context / high, 1.0, np.where(wavelen > old_context / low, factor, blend))


def llama3_rope_scaling(factors: np.ndarray, base: float, head_dim: int) -> dict:
    factors = np.asarray(factors, dtype=np.float64).reshape(-1)
    if factors.shape != (head_dim // 2,):
        raise GGUFImportError(f"rope_freqs.weight holds {factors.size} factors; a head of {head_dim} needs "
                              f"{head_dim // 2}. The file is inconsistent.")
    factor = float(factors.max())
    for low, high, old in product(_LOW_FACTORS, _HIGH_FACTORS, _OLD_CONTEXTS):
        if high > low and np.allclose(llama3_factors(base, head_dim, factor, low, high, old), factors,
                                      rtol=1e-4, atol=1e-6):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                    "original_max_position_embeddings": old}
    raise GGUFImportError(
        "the GGUF's rope_freqs.weight is not Llama 3.1-style RoPE scaling with any usual parameters, so its "
        "positions cannot be expressed in config.json; import the original Hugging Face checkpoint instead.")
