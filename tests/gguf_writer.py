"""Write small GGUF files for tests: valid tiny Llama models and deliberately broken variants.

Follows the GGUF layout (header, typed metadata, tensor infos, aligned data) closely enough for
llama.cpp-compatible readers such as mlx.core.load, while letting a test change the magic, version,
architecture or a tensor's type id.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, BF16, TQ2_0 = 0, 1, 2, 3, 8, 12, 30, 35
BLOCK = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q8_0: (32, 34), Q4_K: (256, 144),
         TQ2_0: (256, 66)}

# Metadata value type ids.
_U32, _I32, _F32, _BOOL, _STR, _ARR, _U64 = 4, 5, 6, 7, 8, 9, 10


@dataclass
class Tensor:
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # GGUF order: row length first
    data: bytes


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _value(v: Any) -> tuple[int, bytes]:
    if isinstance(v, bool):
        return _BOOL, struct.pack("<?", v)
    if isinstance(v, int):
        return (_U32, struct.pack("<I", v)) if 0 <= v < 2**32 else (_U64, struct.pack("<Q", v))
    if isinstance(v, float):
        return _F32, struct.pack("<f", v)
    if isinstance(v, str):
        return _STR, _str(v)
    if isinstance(v, list):
        if all(isinstance(x, str) for x in v):
            return _ARR, struct.pack("<IQ", _STR, len(v)) + b"".join(_str(x) for x in v)
        if all(isinstance(x, int) for x in v):
            return _ARR, struct.pack("<IQ", _I32, len(v)) + struct.pack(f"<{len(v)}i", *v)
    raise TypeError(f"cannot encode {v!r}")


def write_gguf(path: Path, metadata: dict[str, Any], tensors: list[Tensor], *, magic: bytes = b"GGUF",
               version: int = 3, alignment: int = 32) -> Path:
    out = bytearray(magic + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, value in metadata.items():
        vtype, blob = _value(value)
        out += _str(key) + struct.pack("<I", vtype) + blob
    offset = 0
    placed = []
    for t in tensors:
        offset += -offset % alignment
        out += _str(t.name) + struct.pack("<I", len(t.shape)) + struct.pack(f"<{len(t.shape)}Q", *t.shape)
        out += struct.pack("<IQ", t.ggml_type, offset)
        placed.append(offset)
        offset += len(t.data)
    out += b"\0" * (-len(out) % alignment)
    base = len(out)
    for t, off in zip(tensors, placed):
        out += b"\0" * (base + off - len(out))
        out += t.data
    path.write_bytes(bytes(out))
    return path


def random_tensor(name: str, ggml_type: int, shape: tuple[int, ...], rng: np.random.Generator) -> Tensor:
    """Random but valid data: quant bytes anywhere, block scales small finite float16 values."""
    n = int(np.prod(shape))
    if ggml_type == F32:
        return Tensor(name, F32, shape, rng.normal(0, 0.5, n).astype(np.float32).tobytes())
    if ggml_type == F16:
        return Tensor(name, F16, shape, rng.normal(0, 0.5, n).astype(np.float16).tobytes())
    if ggml_type == BF16:
        f32 = rng.normal(0, 0.5, n).astype(np.float32)
        return Tensor(name, BF16, shape, (f32.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    elems, size = BLOCK[ggml_type]
    blocks = rng.integers(0, 256, (n // elems, size), dtype=np.uint8)
    scale_fields = 2 if ggml_type == Q4_1 else 1 if ggml_type in (Q4_0, Q8_0) else 0
    for i in range(scale_fields):
        scales = rng.uniform(0.001, 0.05, n // elems).astype(np.float16)
        blocks[:, 2 * i: 2 * i + 2] = scales.view(np.uint8).reshape(-1, 2)
    return Tensor(name, ggml_type, shape, blocks.tobytes())


def byte_level_alphabet() -> list[str]:
    """The 256 one-character tokens of a byte-level BPE vocabulary, indexed by byte value.

    Printable Latin-1 bytes stand for themselves; the others are shifted to code points from 256 up,
    so every byte has a visible character (space becomes 'Ġ', newline 'Ċ').
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_llama_metadata(*, arch: str = "llama", layers: int = 2, hidden: int = 64, heads: int = 4,
                        kv_heads: int = 2, ffn: int = 128, pre: str = "smollm", add_bos: bool = False,
                        tokenizer_model: str = "gpt2") -> dict[str, Any]:
    alphabet = byte_level_alphabet()
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a"]
    tokens = ["<|end|>", "<|start|>"] + alphabet + ["Ġt", "he", "Ġthe", "Ġa"]
    types = [3, 3] + [1] * (len(tokens) - 2)
    return {
        "general.architecture": arch,
        "general.name": "tiny test llama",
        f"{arch}.block_count": layers,
        f"{arch}.context_length": 256,
        f"{arch}.embedding_length": hidden,
        f"{arch}.feed_forward_length": ffn,
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv_heads,
        f"{arch}.rope.freq_base": 10000.0,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.model": tokenizer_model,
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.add_bos_token": add_bos,
        "tokenizer.chat_template": "{% for m in messages %}<|start|>{{ m['content'] }}<|end|>{% endfor %}",
    }


def tiny_llama_tensors(meta: dict[str, Any], rng: np.random.Generator, *, layer_type: int = Q4_0,
                       embed_type: int = Q8_0, output_type: int | None = F16,
                       norm_type: int = F32, attention_bias: bool = False) -> list[Tensor]:
    """A complete tiny Llama: token_embd, blocks, output_norm, and `output` unless output_type is None
    (with attention_bias, F32 biases on the four attention projections, as Llama's attention_bias)."""
    arch = meta["general.architecture"]
    h, ffn = meta[f"{arch}.embedding_length"], meta[f"{arch}.feed_forward_length"]
    heads, kv = meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"]
    hd = h // heads
    vocab = len(meta["tokenizer.ggml.tokens"])
    ts = [random_tensor("token_embd.weight", embed_type, (h, vocab), rng)]
    for i in range(meta[f"{arch}.block_count"]):
        p = f"blk.{i}."
        ts += [
            random_tensor(p + "attn_norm.weight", norm_type, (h,), rng),
            random_tensor(p + "attn_q.weight", layer_type, (h, heads * hd), rng),
            random_tensor(p + "attn_k.weight", layer_type, (h, kv * hd), rng),
            random_tensor(p + "attn_v.weight", layer_type, (h, kv * hd), rng),
            random_tensor(p + "attn_output.weight", layer_type, (heads * hd, h), rng),
            random_tensor(p + "ffn_norm.weight", norm_type, (h,), rng),
            random_tensor(p + "ffn_gate.weight", layer_type, (h, ffn), rng),
            random_tensor(p + "ffn_up.weight", layer_type, (h, ffn), rng),
            random_tensor(p + "ffn_down.weight", layer_type, (ffn, h), rng),
        ]
        if attention_bias:
            ts += [random_tensor(p + f"attn_{x}.bias", F32, (n,), rng)
                   for x, n in (("q", heads * hd), ("k", kv * hd), ("v", kv * hd), ("output", h))]
    ts.append(random_tensor("output_norm.weight", norm_type, (h,), rng))
    if output_type is not None:
        ts.append(random_tensor("output.weight", output_type, (h, vocab), rng))
    return ts


def write_tiny_llama(path: Path, *, seed: int = 0, meta_overrides: dict[str, Any] | None = None,
                     **tensor_kwargs: Any) -> Path:
    meta = tiny_llama_metadata()
    meta.update(meta_overrides or {})
    rng = np.random.default_rng(seed)
    return write_gguf(path, meta, tiny_llama_tensors(meta, rng, **tensor_kwargs))
