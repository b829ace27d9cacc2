"""Build an HF-style Llama config.json (with mlx-lm's quantization block) from GGUF metadata."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .blocks import GROUP_SIZE
from .errors import GGUFImportError
from .weights import PlannedTensor

SUPPORTED_ARCHITECTURES = ("llama",)


def check_architecture(meta: dict[str, Any], file_name: str) -> str:
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFImportError(
            f"{file_name} holds a {arch!r} model (general.architecture); supported architectures: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}. Use a Llama-architecture GGUF (Llama, SmolLM, "
            "TinyLlama, Mistral 7B exported as llama), or import the original Hugging Face checkpoint."
        )
    return arch


def _need(meta: dict[str, Any], key: str) -> Any:
    if key not in meta:
        raise GGUFImportError(f"the GGUF lacks the metadata key {key!r}, which a Llama model needs; the file is incomplete.")
    return meta[key]


def head_counts(meta: dict[str, Any], arch: str) -> tuple[int, int]:
    heads = int(_need(meta, f"{arch}.attention.head_count"))
    return heads, int(meta.get(f"{arch}.attention.head_count_kv", heads))


def _quantization(planned: list[PlannedTensor]) -> dict[str, Any] | None:
    """mlx-lm's format: the most common (bits, group) as default, per-module overrides for the rest."""
    bits = {p.module: p.bits for p in planned if p.quantized and p.kind == "weight"}
    if not bits:
        return None
    default = Counter(bits.values()).most_common(1)[0][0]
    block: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": default, "mode": "affine"}
    for module, b in bits.items():
        if b != default:
            block[module] = {"group_size": GROUP_SIZE, "bits": b}
    return block


def _rope_scaling(meta: dict[str, Any], arch: str) -> dict[str, Any] | None:
    kind = meta.get(f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return None
    if kind == "linear":
        return {"type": "linear", "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    raise GGUFImportError(
        f"the GGUF uses RoPE scaling {kind!r}; only linear scaling is translated. Import the original "
        "Hugging Face checkpoint instead."
    )


def build_config(meta: dict[str, Any], arch: str, planned: list[PlannedTensor]) -> dict[str, Any]:
    by_module = {p.module: p for p in planned}
    if "model.embed_tokens" not in by_module:
        raise GGUFImportError("the GGUF has no token_embd.weight tensor; it is not a complete model.")
    hidden = int(_need(meta, f"{arch}.embedding_length"))
    heads, kv_heads = head_counts(meta, arch)
    q = by_module.get("model.layers.0.self_attn.q_proj")
    head_dim = q.source.shape[-1] // heads if q else int(meta.get(f"{arch}.attention.key_length", hidden // heads))
    rope_dims = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise GGUFImportError(
            f"the GGUF rotates {rope_dims} of {head_dim} dimensions per head (partial RoPE), which a Llama "
            "config cannot express; this model is not a plain Llama."
        )
    vocab = by_module["model.embed_tokens"].source.shape[1]
    layers = int(_need(meta, f"{arch}.block_count"))
    present = {p.layer for p in planned if p.layer is not None}
    if present != set(range(layers)):
        raise GGUFImportError(
            f"{arch}.block_count says {layers} layers but the tensors cover layers {sorted(present)[:5]}..; "
            "the file is inconsistent."
        )
    eos = meta.get("tokenizer.ggml.eos_token_id")
    eot = meta.get("tokenizer.ggml.eot_token_id")
    # llama.cpp stops on any end-of-generation token; mlx-lm accepts a list here.
    eos_ids = [int(x) for x in dict.fromkeys(v for v in (eos, eot) if v is not None)]
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": int(_need(meta, f"{arch}.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "rope_traditional": False,  # q/k rows are un-permuted back to HF's layout
        "vocab_size": vocab,
        "max_position_embeddings": int(meta.get(f"{arch}.context_length", 2048)),
        "tie_word_embeddings": "lm_head" not in by_module,
        "attention_bias": any(p.kind == "bias" and "self_attn" in p.module for p in planned),
        "mlp_bias": any(p.kind == "bias" and ".mlp." in p.module for p in planned),
    }
    if (scaling := _rope_scaling(meta, arch)) is not None:
        cfg["rope_scaling"] = scaling
    if (bos := meta.get("tokenizer.ggml.bos_token_id")) is not None:
        cfg["bos_token_id"] = int(bos)
    if eos_ids:
        cfg["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if (quant := _quantization(planned)) is not None:
        cfg["quantization"] = quant
        cfg["quantization_config"] = quant  # mlx-lm writes both; some tools read the second
    return cfg
