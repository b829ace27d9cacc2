"""Which parameter of the mlx-lm model each GGUF tensor becomes, in what form (before any data moves).

The target is mlx-lm's own model class for the config (node/gguf/families.py), built lazily: its
parameter names and shapes are the contract. For each parameter the `gguf` package's tensor-name
tables (the ones llama.cpp's converter writes with) give the GGUF name, so any architecture they know
maps without a table of our own; mlx-lm's stacked experts (`switch_mlp`) are looked up under the
name Hugging Face stacks them with (`experts`). Every GGUF tensor must land on a parameter of the
right shape and every parameter must be found, or the import stops naming what does not fit.

llama.cpp's converter reorders the rows of attn_q / attn_k inside each head of a Llama from Hugging
Face's "rotate half" layout to the interleaved pairs its RoPE kernel uses; `unpermute_rows` gives the
row order that undoes it, so the output is a plain Hugging Face layout any loader understands.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .blocks import FLOAT_DTYPES, GROUP_SIZE, quantized_shapes
from .errors import GGUFImportError
from .reader import TensorInfo
from .safetensors_writer import TensorSpec
from .types import GGMLType, ggml_type_name, supported_type_names

EXACT_SCALE_TYPES = (GGMLType.Q4_K, GGMLType.Q5_K)  # whose scales float16 would round


@dataclass(frozen=True)
class PlannedTensor:
    """One GGUF tensor and the output tensors it becomes."""

    source: TensorInfo
    module: str  # the parameter's module path, e.g. model.layers.3.self_attn.q_proj
    kind: str  # "weight" or "bias"
    layer: int | None
    heads: int | None  # set for a Llama's attn_q / attn_k: rows are un-permuted per head
    outputs: tuple[TensorSpec, ...]
    bits: int | None = None  # the MLX affine form's bits; None for a float tensor
    shift: float = 0.0       # added to every value (a Gemma norm stored as 1 + w)
    mode: str = "affine"     # MLX's quantization mode (mxfp4 for MXFP4)

    @property
    def quantized(self) -> bool:
        return self.bits is not None

    @property
    def rows(self) -> int:
        """Rows the data is handled in: all but the last dimension (a q/k bias: one per element)."""
        if len(self.source.shape) == 1:
            return self.source.shape[0] if self.heads else 1
        return math.prod(self.source.shape[1:])

    @property
    def out_bytes(self) -> int:
        return sum(s.nbytes for s in self.outputs)

    @property
    def sort_key(self) -> tuple[int, int]:
        # embeddings, then layers in order, then the final norm and head: shards then follow layers,
        # so a worker that serves a slice of layers touches few files.
        if self.module.endswith("embed_tokens"):
            return (0, 0)
        if self.layer is not None:
            return (1, self.layer)
        return (2, 0 if self.module.endswith("norm") else 1)


def unpermute_rows(rows: int, heads: int) -> np.ndarray:
    """Index array: output (HF) row r is GGUF row perm[r].

    Within a head of size hd, GGUF row 2*i + j holds HF row j*hd/2 + i (i < hd/2, j in {0, 1}).
    """
    if rows % heads or (rows // heads) % 2:
        raise GGUFImportError(f"cannot split {rows} attention rows into {heads} heads of even size.")
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, half, 2).transpose(0, 2, 1).reshape(-1)


@lru_cache(maxsize=8)
def _target_parameters(config_json: str) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of mlx-lm's model for this config (built lazily: nothing is allocated)."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    config = json.loads(config_json)
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    return {name: tuple(value.shape) for name, value in tree_flatten(model.parameters())}


def target_parameters(config: dict) -> dict[str, tuple[int, ...]]:
    return _target_parameters(json.dumps(config, sort_keys=True))


def gguf_names(arch: str, params: dict[str, tuple[int, ...]], num_layers: int) -> dict[str, str]:
    """GGUF tensor name -> the parameter it is, from the `gguf` package's name tables."""
    import gguf

    arch_enum = next((a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch), None)
    if arch_enum is None:
        raise GGUFImportError(f"the gguf package knows no architecture {arch!r}")
    table = gguf.get_tensor_name_map(arch_enum, num_layers)
    out = {}
    for param in params:
        module, _, suffix = param.rpartition(".")
        found = table.get_name(module.replace(".switch_mlp.", ".experts."))
        if found is not None:
            out[f"{found}.{suffix}"] = param
        elif (whole := table.get_name(param)) is not None:
            out[f"{whole}.weight"] = param  # a parameter of its own (gpt-oss's attention sinks)
    return out


def _layer_of(module: str) -> int | None:
    parts = module.split(".")
    for a, b in zip(parts, parts[1:]):
        if a == "layers" and b.isdigit():
            return int(b)
    return None


def _check_type(info: TensorInfo) -> None:
    if info.ggml_type not in GGMLType.SUPPORTED:
        raise GGUFImportError(
            f"tensor {info.name!r} is stored as {ggml_type_name(info.ggml_type)}, which this importer "
            f"cannot convert; supported tensor types: {supported_type_names()}. Re-quantize the file with "
            "llama-quantize to one of those (e.g. `llama-quantize --allow-requantize IN.gguf OUT.gguf Q4_K_M`), "
            "or import the original Hugging Face checkpoint."
        )


def plan_tensor(info: TensorInfo, param: str, expected: tuple[int, ...], *, heads: int | None,
                exact_scales: bool, shift: float = 0.0) -> PlannedTensor:
    _check_type(info)
    module, _, kind = param.rpartition(".")
    shape = tuple(reversed(info.shape))  # GGUF lists the fastest dimension first
    if shape != expected:
        raise GGUFImportError(f"tensor {info.name!r} has shape {shape}, but {param} of the model built from the "
                              f"file's own metadata has {expected}; the file is inconsistent.")
    bits = GGMLType.mlx_bits(info.ggml_type)
    if bits is not None and kind != "weight":
        raise GGUFImportError(f"tensor {info.name!r} is a {kind} stored block-quantized ({info.type_name}); only "
                              "weight matrices are quantized in the files llama.cpp writes.")
    if shift and bits is not None:
        raise GGUFImportError(f"tensor {info.name!r} is a norm stored block-quantized ({info.type_name}); this "
                              "importer expects norms as float tensors, as llama.cpp writes them.")
    if bits is not None:
        if len(shape) < 2 or shape[-1] % GROUP_SIZE:
            raise GGUFImportError(f"quantized tensor {info.name!r} has unexpected shape {shape}.")
        scale_dtype = "F32" if exact_scales and info.ggml_type in EXACT_SCALE_TYPES else "F16"
        rows = math.prod(shape[:-1])
        mode = GGMLType.mlx_mode(info.ggml_type)
        outs = tuple(
            TensorSpec(f"{module}.{suffix}", dtype, shape[:-1] + shp[1:])
            for suffix, (shp, dtype) in quantized_shapes(bits, rows, shape[-1], scale_dtype, mode).items()
        )
    else:
        outs = (TensorSpec(param, FLOAT_DTYPES[info.ggml_type][0], shape),)
    return PlannedTensor(info, module, kind, _layer_of(module), heads, outs, bits, shift,
                         GGMLType.mlx_mode(info.ggml_type))


# Multimodal towers some files carry next to the text model (Ollama's Gemma 3 blobs: vision, projector;
# audio): served as text, they are left out.
SKIPPED_PREFIXES = ("v.", "mm.", "a.")
# Per-dimension RoPE factors the config forms here cannot carry.
_ROPE_FACTOR_TENSORS = {
    "rope_freqs.weight": "Llama 3.1-style RoPE scaling (rope_freqs.weight)",
    "rope_factors_long.weight": "Phi-3 128k LongRoPE (rope_factors_long.weight)",
    "rope_factors_short.weight": "Phi-3 128k LongRoPE (rope_factors_short.weight)",
}


def plan_tensors(tensors: dict[str, TensorInfo], arch: str, config: dict, *, unpermute_qk: bool,
                 exact_scales: bool = False, norm_shift: float = 0.0) -> list[PlannedTensor]:
    params = target_parameters(config)
    by_gguf = gguf_names(arch, params, int(config["num_hidden_layers"]))
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    planned, problems = [], []
    for info in tensors.values():
        if info.name.startswith(SKIPPED_PREFIXES):
            continue
        if info.name == "rope_freqs.weight" and (config.get("rope_scaling") or {}).get("rope_type") == "llama3":
            continue  # carried by config.json instead (node/gguf/rope_factors.py)
        param = by_gguf.get(info.name)
        if param is None:
            if info.name in _ROPE_FACTOR_TENSORS:
                raise GGUFImportError(
                    f"the GGUF carries {_ROPE_FACTOR_TENSORS[info.name]}, which this importer does not translate "
                    "yet; the model would run with the wrong positions. Import the original Hugging Face "
                    "checkpoint instead.")
            problems.append(info.name)
            continue
        role = info.name.split(".")[-2]
        qk_heads = {"attn_q": heads, "attn_k": kv_heads}.get(role) if unpermute_qk else None
        shift = norm_shift if info.name.endswith("norm.weight") else 0.0
        planned.append(plan_tensor(info, param, params[param], heads=qk_heads, exact_scales=exact_scales,
                                   shift=shift))
    if problems:
        raise GGUFImportError(
            f"tensor(s) {', '.join(repr(p) for p in problems[:5])} are not part of a {config['model_type']} "
            "model built from the file's metadata; this GGUF is a variant the importer does not know.")
    found = {p.module + "." + p.kind for p in planned}
    if missing := [p for p in params if p not in found]:
        raise GGUFImportError(f"the GGUF lacks {len(missing)} tensor(s) the model needs, e.g. "
                              f"{', '.join(missing[:4])}; the file is incomplete or of another variant.")
    return sorted(planned, key=lambda p: p.sort_key)
