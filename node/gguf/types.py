"""ggml tensor type ids, their block layouts, and which of them the importer converts."""

from __future__ import annotations

# ggml type id -> name (ids are fixed by ggml's on-disk format).
_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
    22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}

# (elements per block, bytes per block) for the types whose size we can compute;
# used to locate tensors and to detect truncated files.
_LAYOUTS = {
    0: (1, 4), 1: (1, 2), 30: (1, 2), 28: (1, 8), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8),
    2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    20: (32, 18), 23: (256, 136), 35: (256, 66), 39: (32, 17),
}


class GGMLType:
    F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16 = 0, 1, 2, 3, 6, 7, 8, 30
    Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4 = 10, 11, 12, 13, 14, 20, 23, 39

    FLOATS = (F32, F16, BF16)   # copied as they are (BF16 stays bfloat16, never squeezed into float16)
    # Repacked without re-quantizing: affine over groups of 32 (node/gguf/blocks.py). Value: MLX bits.
    EXACT_BITS = {Q4_0: 4, Q4_1: 4, Q5_0: 5, Q5_1: 5, Q8_0: 8, Q4_K: 4, Q5_K: 5}
    # No affine group-32 form: dequantized by `gguf` (bit-exact with ggml) and quantized again by MLX.
    # Measured on llama-quantize's own output (tests/data/gguf), RMS error added relative to the
    # tensor's RMS, next to the format's own error from the float original:
    #   Q6_K   -> 8 bits: +0.5%  (Q6_K itself: 1.8%)     IQ4_NL, IQ4_XS -> 8 bits: +0.5%  (itself: 7.7%)
    #   Q3_K   -> 4 bits: +7.5%  (Q3_K itself: 15%)      Q2_K           -> 4 bits: +7.6%  (itself: 30%)
    # 8 bits where the format is fine (a 4-bit copy would double its error); 4 bits for Q2_K / Q3_K,
    # which people pick to save memory, at a fraction of their own error.
    REQUANTIZED_BITS = {Q6_K: 8, IQ4_NL: 8, IQ4_XS: 8, Q3_K: 4, Q2_K: 4}
    # MXFP4 (gpt-oss experts) is MLX's own mxfp4 mode bit for bit: 4-bit E2M1 values, one E8M0 scale
    # per 32, no bias. Repacked, not re-quantized.
    MXFP4_BITS = {MXFP4: 4}
    SUPPORTED = FLOATS + tuple(EXACT_BITS) + tuple(REQUANTIZED_BITS) + tuple(MXFP4_BITS)

    @staticmethod
    def layout(type_id: int) -> tuple[int, int] | None:
        return _LAYOUTS.get(type_id)

    @staticmethod
    def mlx_bits(type_id: int) -> int | None:
        """Bits of the MLX affine form a quantized type becomes; None for the float types."""
        return (GGMLType.EXACT_BITS.get(type_id) or GGMLType.REQUANTIZED_BITS.get(type_id)
                or GGMLType.MXFP4_BITS.get(type_id))

    @staticmethod
    def mlx_mode(type_id: int) -> str:
        """MLX's quantization mode for the type: mxfp4 for MXFP4, affine for the rest."""
        return "mxfp4" if type_id in GGMLType.MXFP4_BITS else "affine"


def ggml_type_name(type_id: int) -> str:
    return _NAMES.get(type_id, f"unknown type id {type_id}")


def supported_type_names() -> str:
    return ", ".join(ggml_type_name(t) for t in GGMLType.SUPPORTED)
