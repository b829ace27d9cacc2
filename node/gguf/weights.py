"""Map GGUF Llama tensors to Hugging Face names and plan the output tensors (before any data moves).

llama.cpp's converter reorders the rows of attn_q / attn_k inside each head from HF's "rotate half"
layout to the interleaved pairs its RoPE kernel uses. `unpermute_rows` gives the row order that undoes
it, so the output is a plain HF Llama (rope_traditional false) that any HF-layout loader understands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .blocks import FLOAT_DTYPES, GROUP_SIZE, quantized_shapes
from .errors import GGUFImportError
from .reader import TensorInfo
from .safetensors_writer import TensorSpec
from .types import GGMLType, ggml_type_name, supported_type_names

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")


@dataclass(frozen=True)
class PlannedTensor:
    """One GGUF tensor and the output tensors it becomes."""

    source: TensorInfo
    module: str  # HF module path, e.g. model.layers.3.self_attn.q_proj
    kind: str  # "weight" or "bias" (GGUF's suffix)
    layer: int | None
    heads: int | None  # set for attn_q / attn_k: rows are un-permuted per head
    outputs: tuple[TensorSpec, ...]

    @property
    def quantized(self) -> bool:
        return self.source.ggml_type in GGMLType.QUANTIZED_BITS

    @property
    def bits(self) -> int | None:
        return GGMLType.QUANTIZED_BITS.get(self.source.ggml_type)

    @property
    def out_bytes(self) -> int:
        return sum(s.nbytes for s in self.outputs)

    @property
    def sort_key(self) -> tuple[int, int]:
        # embeddings, then layers in order, then the final norm and head: shards then follow layers,
        # so a worker that serves a slice of layers touches few files.
        if self.module == "model.embed_tokens":
            return (0, 0)
        if self.layer is not None:
            return (1, self.layer)
        return (2, 0 if self.module == "model.norm" else 1)


def _hf_module(name: str) -> tuple[str, str, int | None, str]:
    """GGUF tensor name -> (HF module, weight|bias, layer, GGUF role)."""
    if m := _LAYER_RE.match(name):
        layer, role, kind = int(m.group(1)), m.group(2), m.group(3)
        if role in _LAYER_NAMES:
            return f"model.layers.{layer}.{_LAYER_NAMES[role]}", kind, layer, role
    elif (m := _GLOBAL_RE.match(name)) and m.group(1) in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[m.group(1)], m.group(2), None, m.group(1)
    if name == "rope_freqs.weight":
        raise GGUFImportError(
            "the GGUF carries rope_freqs.weight (Llama 3.1-style RoPE scaling), which this importer does "
            "not translate yet; the model would run with the wrong positions. Import the original Hugging "
            "Face checkpoint instead."
        )
    raise GGUFImportError(
        f"tensor {name!r} is not part of a standard Llama model (expected token_embd, output_norm, "
        "output, and blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}); "
        "this GGUF is a variant the importer does not know."
    )


def unpermute_rows(rows: int, heads: int) -> np.ndarray:
    """Index array: output (HF) row r is GGUF row perm[r].

    Within a head of size hd, GGUF row 2*i + j holds HF row j*hd/2 + i (i < hd/2, j in {0, 1}).
    """
    if rows % heads or (rows // heads) % 2:
        raise GGUFImportError(f"cannot split {rows} attention rows into {heads} heads of even size.")
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, half, 2).transpose(0, 2, 1).reshape(-1)


def _check_type(info: TensorInfo) -> None:
    if info.ggml_type not in GGMLType.SUPPORTED:
        raise GGUFImportError(
            f"tensor {info.name!r} is stored as {ggml_type_name(info.ggml_type)}, which this importer "
            f"cannot convert; supported tensor types: {supported_type_names()}. Use a GGUF quantized "
            "as Q4_0, Q4_1 or Q8_0 (or F16), or re-quantize it with llama-quantize, e.g. "
            "`llama-quantize --allow-requantize IN.gguf OUT.gguf Q4_0`."
        )


def plan_tensor(info: TensorInfo, n_heads: int, n_kv_heads: int) -> PlannedTensor:
    module, kind, layer, role = _hf_module(info.name)
    _check_type(info)
    heads = n_heads if role == "attn_q" else n_kv_heads if role == "attn_k" else None
    shape = tuple(reversed(info.shape))  # GGUF lists the fastest dimension first
    if info.ggml_type in GGMLType.QUANTIZED_BITS:
        if len(shape) != 2 or shape[1] % GROUP_SIZE:
            raise GGUFImportError(f"quantized tensor {info.name!r} has unexpected shape {shape}.")
        outs = tuple(
            TensorSpec(f"{module}.{suffix}", dtype, shp)
            for suffix, (shp, dtype) in quantized_shapes(info.ggml_type, *shape).items()
        )
    else:
        outs = (TensorSpec(f"{module}.{kind}", FLOAT_DTYPES[info.ggml_type][0], shape),)
    return PlannedTensor(info, module, kind, layer, heads, outs)


def plan_tensors(tensors: dict[str, TensorInfo], n_heads: int, n_kv_heads: int) -> list[PlannedTensor]:
    planned = [plan_tensor(t, n_heads, n_kv_heads) for t in tensors.values()]
    return sorted(planned, key=lambda p: p.sort_key)
