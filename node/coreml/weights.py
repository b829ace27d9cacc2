"""A slice's layer tensors read straight from the safetensors files (no MLX, no PyTorch).

MLX affine-quantized matrices (w = q * scale + bias per group of inputs) of 4 or 8 bits are kept
as integers for Core ML's block-wise form (w = scale * (q - offset), offset = -bias / scale in fp16),
so a 4-bit checkpoint stays 4-bit on disk and in memory. Other bit widths, and groups whose offset
fp16 cannot hold precisely, fall back to dense fp16.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from node.coreml.arch import Arch
from node.model_sizes import read_safetensors_header

# An offset beyond this loses more than 1/8 of a quantization step to fp16 rounding.
MAX_EXACT_OFFSET = 256.0
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
NORMS = ("input_layernorm", "post_attention_layernorm")


class WeightsError(ValueError):
    """Weight files that do not hold what a slice needs."""


@dataclass(frozen=True)
class LinearWeight:
    """One projection, (out, in). Either `dense` (fp16) or block-wise ints `q` with `scale` and
    `offset` (fp16, one per `group` inputs); `bias` (fp16, out) when the layer has one."""
    out_features: int
    in_features: int
    dense: np.ndarray | None = None
    q: np.ndarray | None = None          # uint8 values < 2**bits
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    bits: int = 16
    bias: np.ndarray | None = None

    @property
    def quantized(self) -> bool:
        return self.q is not None

    @property
    def group(self) -> int:
        return self.in_features // self.scale.shape[1]

    def to_float(self) -> np.ndarray:
        """The matrix as float32, the way Core ML dequantizes it."""
        if self.dense is not None:
            return self.dense.astype(np.float32)
        reps = self.group
        scale = np.repeat(self.scale.astype(np.float32), reps, axis=1)
        offset = np.repeat(self.offset.astype(np.float32), reps, axis=1)
        return scale * (self.q.astype(np.float32) - offset)

    def stored_bytes(self) -> int:
        if self.dense is not None:
            size = self.dense.size * 2
        else:
            size = self.q.size * self.bits // 8 + self.scale.size * 2 + self.offset.size * 2
        return size + (0 if self.bias is None else self.bias.size * 2)

    def rows(self, order: np.ndarray) -> "LinearWeight":
        """The same projection with its output rows reordered (quantization groups run along inputs)."""
        pick = lambda a: None if a is None else a[order]  # noqa: E731
        return LinearWeight(self.out_features, self.in_features, pick(self.dense), pick(self.q), pick(self.scale),
                            pick(self.offset), self.bits, pick(self.bias))


@dataclass(frozen=True)
class LayerWeights:
    index: int                           # the model's layer number
    linear: dict[str, LinearWeight]      # keys: PROJECTIONS
    norms: dict[str, np.ndarray]         # keys: NORMS, float32 (hidden,)

    def stored_bytes(self) -> int:
        return sum(w.stored_bytes() for w in self.linear.values()) + sum(n.size * 2 for n in self.norms.values())


@dataclass(frozen=True)
class SliceWeights:
    arch: Arch
    layers: list[LayerWeights]
    digest: str                          # sha256 of every tensor read: part of the package cache key
    dense_fallbacks: list[str] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.layers[0].index

    @property
    def end(self) -> int:
        return self.layers[-1].index + 1


class _Tensors:
    """Tensor name -> numpy array, read from whichever weight file holds it, and hashed as read."""

    def __init__(self, model_dir: Path):
        self.where: dict[str, tuple[Path, object, int]] = {}
        for path in sorted(model_dir.glob("model*.safetensors")):
            header = read_safetensors_header(path)
            for name, entry in header.tensors.items():
                self.where[name] = (path, entry, header.data_start)
        self.hash = hashlib.sha256()

    def has(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str) -> np.ndarray:
        if name not in self.where:
            raise WeightsError(f"the weight files lack {name}")
        path, entry, start = self.where[name]
        raw = np.fromfile(path, dtype=np.uint8, count=entry.nbytes, offset=start + entry.begin)
        self.hash.update(f"{name}|{entry.dtype}|{entry.shape}|".encode())
        self.hash.update(raw.tobytes())
        return _decode(raw, entry.dtype, entry.shape, name)


def _decode(raw: np.ndarray, dtype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    kinds = {"F16": np.float16, "F32": np.float32, "U32": np.uint32, "U8": np.uint8}
    if dtype not in kinds:
        raise WeightsError(f"{name}: tensor type {dtype} is not read by the Core ML converter")
    return raw.view(kinds[dtype]).reshape(shape)


def unpack_mlx(packed: np.ndarray, bits: int) -> np.ndarray:
    """MLX's packing (little-endian uint32 words, lowest bits first) -> one uint8 per value."""
    data = np.ascontiguousarray(packed).view(np.uint8)
    if bits == 8:
        return data.copy()
    if bits == 4:
        return np.stack([data & 0x0F, data >> 4], axis=-1).reshape(packed.shape[0], -1)
    raise WeightsError(f"{bits}-bit values are not unpacked here")


def _linear(t: _Tensors, name: str, quant: dict | None, *, quantized: bool, fallbacks: list[str]) -> LinearWeight:
    weight = t.get(f"{name}.weight")
    bias = t.get(f"{name}.bias").astype(np.float16) if t.has(f"{name}.bias") else None
    if not t.has(f"{name}.scales"):
        return LinearWeight(weight.shape[0], weight.shape[1], dense=weight.astype(np.float16), bias=bias)
    scales = t.get(f"{name}.scales").astype(np.float32)
    biases = t.get(f"{name}.biases").astype(np.float32)
    bits = int(quant.get("bits", 4)) if quant else 4
    out, groups = scales.shape
    in_features = weight.shape[1] * 32 // bits
    if bits in (4, 8):
        q = unpack_mlx(weight, bits)
    else:  # other widths: dequantize through MLX's own kernel, then keep dense
        import mlx.core as mx

        dense = mx.dequantize(mx.array(weight), mx.array(scales), mx.array(biases), group_size=in_features // groups,
                              bits=bits)
        fallbacks.append(f"{name} ({bits}-bit: dense fp16)")
        return LinearWeight(out, in_features, dense=np.array(dense.astype(mx.float16)), bias=bias)
    # w = q*s + b  ==  s * (q - (-b/s)). A group with s == 0 is constant b: s' = b, q = 0, offset -1.
    zero = scales == 0
    safe = np.where(zero, 1.0, scales)
    offset = np.where(zero, -1.0, -biases / safe)
    scale = np.where(zero, biases, scales)
    if zero.any():
        q = q.copy()
        q[np.repeat(zero, in_features // groups, axis=1)] = 0
    if not quantized or np.abs(offset).max() > MAX_EXACT_OFFSET:
        if quantized:
            fallbacks.append(f"{name} (offset beyond fp16 precision: dense fp16)")
        dense = np.repeat(scale, in_features // groups, axis=1) * (q.astype(np.float32) - np.repeat(offset, in_features // groups, axis=1))
        return LinearWeight(out, in_features, dense=dense.astype(np.float16), bias=bias)
    return LinearWeight(out, in_features, q=q, scale=scale.astype(np.float16), offset=offset.astype(np.float16),
                        bits=bits, bias=bias)


def _half_split_order(heads: int, head_dim: int) -> np.ndarray:
    """Rows of an interleaved-RoPE projection (pairs 2i, 2i+1) in half-split order (i, i + d/2).
    Queries and keys get the same order, so their dot products are unchanged."""
    per_head = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    return (np.arange(heads)[:, None] * head_dim + per_head[None, :]).reshape(-1)


def read_slice_weights(model_dir: Path | str, config: dict, arch: Arch, start: int, end: int, *,
                       quantized: bool = True) -> SliceWeights:
    """The tensors of layers [start, end) and a digest of them."""
    t = _Tensors(Path(model_dir))
    quant = config.get("quantization") or {}
    fallbacks: list[str] = []
    layers = []
    for index in range(start, end):
        prefix = f"model.layers.{index}"
        linear = {}
        for proj in PROJECTIONS:
            name = f"{prefix}.{proj}"
            linear[proj] = _linear(t, name, quant.get(name, quant), quantized=quantized, fallbacks=fallbacks)
        if arch.rope_traditional:
            linear["self_attn.q_proj"] = linear["self_attn.q_proj"].rows(_half_split_order(arch.heads, arch.head_dim))
            linear["self_attn.k_proj"] = linear["self_attn.k_proj"].rows(_half_split_order(arch.kv_heads, arch.head_dim))
        norms = {n: t.get(f"{prefix}.{n}.weight").astype(np.float32) for n in NORMS}
        layers.append(LayerWeights(index, linear, norms))
    return SliceWeights(arch, layers, t.hash.hexdigest(), fallbacks)
