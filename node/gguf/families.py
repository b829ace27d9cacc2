"""From a GGUF's architecture and metadata to the mlx-lm config of the same model.

llama.cpp writes each architecture's hyperparameters under `{arch}.*` keys (block_count,
embedding_length, attention.head_count, expert_count, ...). Each family below says which mlx-lm
model type it becomes, what its config adds to the common fields, and what llama.cpp's converter did
to the tensors that must be undone (node/gguf/weights.py applies it):

  llama (Llama, Mistral, SmolLM)  q/k rows permuted for llama.cpp's interleaved RoPE: un-permuted
  qwen2, qwen3, qwen3moe          nothing (rotate-half RoPE, as Hugging Face)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import GGUFImportError


@dataclass(frozen=True)
class Family:
    model_type: str                 # mlx-lm's
    hf_architecture: str
    extra: Callable[[dict[str, Any], str], dict[str, Any]]
    unpermute_qk: bool = False      # llama.cpp reordered q/k rows for its interleaved RoPE


def _need(meta: dict[str, Any], key: str) -> Any:
    if key not in meta:
        raise GGUFImportError(f"the GGUF lacks the metadata key {key!r}, which this model needs; the file is incomplete.")
    return meta[key]


def _llama(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    return {"rope_traditional": False}  # q/k rows are un-permuted back to Hugging Face's layout


def _none(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    return {}


def _qwen3_moe(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    experts = int(_need(meta, f"{arch}.expert_count"))
    return {
        "num_experts": experts,
        "num_experts_per_tok": int(_need(meta, f"{arch}.expert_used_count")),
        "moe_intermediate_size": int(_need(meta, f"{arch}.expert_feed_forward_length")),
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
    }


FAMILIES = {
    "llama": Family("llama", "LlamaForCausalLM", _llama, unpermute_qk=True),
    "qwen2": Family("qwen2", "Qwen2ForCausalLM", _none),
    "qwen3": Family("qwen3", "Qwen3ForCausalLM", _none),
    "qwen3moe": Family("qwen3_moe", "Qwen3MoeForCausalLM", _qwen3_moe),
}


def family_of(meta: dict[str, Any], file_name: str) -> tuple[str, Family]:
    arch = meta.get("general.architecture")
    if arch not in FAMILIES:
        raise GGUFImportError(
            f"{file_name} holds a {arch!r} model (general.architecture); the GGUF importer knows "
            f"{', '.join(FAMILIES)}. Import the original Hugging Face checkpoint of this model instead "
            "(cluster up serves any family listed in the README from its mlx-lm directory)."
        )
    return arch, FAMILIES[arch]


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


def build_config(meta: dict[str, Any], arch: str, family: Family, *, vocab: int, head_dim: int, tied: bool,
                 biases: dict[str, bool]) -> dict[str, Any]:
    """config.json of the mlx-lm model (without its quantization block, which follows the tensors)."""
    heads = int(_need(meta, f"{arch}.attention.head_count"))
    rope_dims = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise GGUFImportError(
            f"the GGUF rotates {rope_dims} of {head_dim} dimensions per head (partial RoPE), which the "
            f"{family.model_type} config cannot express.")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    eot = meta.get("tokenizer.ggml.eot_token_id")
    # llama.cpp stops on any end-of-generation token; mlx-lm accepts a list here.
    eos_ids = [int(x) for x in dict.fromkeys(v for v in (eos, eot) if v is not None)]
    cfg: dict[str, Any] = {
        "architectures": [family.hf_architecture],
        "model_type": family.model_type,
        "hidden_size": int(_need(meta, f"{arch}.embedding_length")),
        "num_hidden_layers": int(_need(meta, f"{arch}.block_count")),
        "intermediate_size": int(meta.get(f"{arch}.feed_forward_length", 0) or 0),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "vocab_size": vocab,
        "max_position_embeddings": int(meta.get(f"{arch}.context_length", 2048)),
        "tie_word_embeddings": tied,
        "attention_bias": biases.get("attention", False),
        "mlp_bias": biases.get("mlp", False),
        **family.extra(meta, arch),
    }
    if (scaling := _rope_scaling(meta, arch)) is not None:
        cfg["rope_scaling"] = scaling
    if (bos := meta.get("tokenizer.ggml.bos_token_id")) is not None:
        cfg["bos_token_id"] = int(bos)
    if eos_ids:
        cfg["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    return cfg
