"""From a GGUF's architecture and metadata to the mlx-lm config of the same model.

llama.cpp writes each architecture's hyperparameters under `{arch}.*` keys (block_count,
embedding_length, attention.head_count, expert_count, ...). Each family below says which mlx-lm
model type it becomes, what its config adds to the common fields, and what llama.cpp's converter did
to the tensors that must be undone (node/gguf/weights.py applies it):

  llama (Llama, Mistral, SmolLM)  q/k rows permuted for llama.cpp's interleaved RoPE: un-permuted
  qwen2, qwen3, qwen3moe          nothing (rotate-half RoPE, as Hugging Face)
  gemma2, gemma3                  every norm weight stored as 1 + w (Gemma's RMSNorm scales by 1 + w,
                                  and mlx-lm's does too): 1 is taken off again. The attention scale,
                                  which the file does not carry, is the one llama.cpp uses (1/sqrt of
                                  the head size; of hidden / heads for the 27B models); Gemma 3's
                                  sliding-window pattern is llama.cpp's fixed 6
  phi3 (Phi-3, Phi-4)             nothing: q/k/v and gate/up stay fused as mlx-lm's phi3 holds them
  gpt-oss                         experts already split into gate / up (MXFP4 kept as mxfp4); layers
                                  alternate sliding-window and full attention, as llama.cpp fixes them
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
    norm_shift: float = 0.0         # added back to every norm weight (Gemma's are stored as 1 + w)
    partial_rope: bool = False      # rotating fewer dimensions than the head has is expressible


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


def _attention_scalar(meta: dict[str, Any], arch: str, big_model_layers: int) -> int:
    """Gemma's query_pre_attn_scalar, as llama.cpp derives it (the GGUF does not carry it)."""
    head_dim = int(meta.get(f"{arch}.attention.key_length") or 0) or (
        int(_need(meta, f"{arch}.embedding_length")) // int(_need(meta, f"{arch}.attention.head_count")))
    if int(_need(meta, f"{arch}.block_count")) == big_model_layers:  # the 27B: hidden / heads
        return int(meta[f"{arch}.embedding_length"]) // int(meta[f"{arch}.attention.head_count"])
    return head_dim


def _gemma2(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    return {
        "query_pre_attn_scalar": _attention_scalar(meta, arch, big_model_layers=46),
        "attn_logit_softcapping": float(meta.get(f"{arch}.attn_logit_softcapping", 50.0)),
        "final_logit_softcapping": float(meta.get(f"{arch}.final_logit_softcapping", 30.0)),
    }


def _gemma3(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    return {
        "query_pre_attn_scalar": _attention_scalar(meta, arch, big_model_layers=62),
        "sliding_window": int(meta.get(f"{arch}.attention.sliding_window", 512)),
        "sliding_window_pattern": 6,       # llama.cpp: every sixth layer global
        "rope_local_base_freq": 10000.0,   # llama.cpp: the sliding layers' RoPE base
    }


def _phi3(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    return {"original_max_position_embeddings": int(meta.get(f"{arch}.rope.scaling.original_context_length",
                                                             meta.get(f"{arch}.context_length", 4096)))}


def _gpt_oss(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    layers = int(_need(meta, f"{arch}.block_count"))
    return {
        "num_local_experts": int(_need(meta, f"{arch}.expert_count")),
        "num_experts_per_tok": int(_need(meta, f"{arch}.expert_used_count")),
        "intermediate_size": int(_need(meta, f"{arch}.expert_feed_forward_length")),
        "sliding_window": int(_need(meta, f"{arch}.attention.sliding_window")),
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
    }


FAMILIES = {
    "llama": Family("llama", "LlamaForCausalLM", _llama, unpermute_qk=True),
    "qwen2": Family("qwen2", "Qwen2ForCausalLM", _none),
    "qwen3": Family("qwen3", "Qwen3ForCausalLM", _none),
    "qwen3moe": Family("qwen3_moe", "Qwen3MoeForCausalLM", _qwen3_moe),
    "gemma2": Family("gemma2", "Gemma2ForCausalLM", _gemma2, norm_shift=-1.0),
    "gemma3": Family("gemma3_text", "Gemma3ForCausalLM", _gemma3, norm_shift=-1.0),
    "phi3": Family("phi3", "Phi3ForCausalLM", _phi3, partial_rope=True),
    "gpt-oss": Family("gpt_oss", "GptOssForCausalLM", _gpt_oss),
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
    if kind == "yarn":  # gpt-oss, Qwen3 long context; betas as llama.cpp defaults them
        return {"rope_type": "yarn", "factor": float(meta[f"{arch}.rope.scaling.factor"]),
                "original_max_position_embeddings": int(meta[f"{arch}.rope.scaling.original_context_length"]),
                "beta_fast": float(meta.get(f"{arch}.rope.scaling.yarn_beta_fast", 32.0)),
                "beta_slow": float(meta.get(f"{arch}.rope.scaling.yarn_beta_slow", 1.0))}
    raise GGUFImportError(
        f"the GGUF uses RoPE scaling {kind!r}; linear and yarn scaling are translated. Import the original "
        "Hugging Face checkpoint instead."
    )


def build_config(meta: dict[str, Any], arch: str, family: Family, *, vocab: int, head_dim: int, tied: bool,
                 biases: dict[str, bool]) -> dict[str, Any]:
    """config.json of the mlx-lm model (without its quantization block, which follows the tensors)."""
    heads = int(_need(meta, f"{arch}.attention.head_count"))
    rope_dims = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim and not family.partial_rope:
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
    if family.partial_rope:
        cfg["partial_rotary_factor"] = rope_dims / head_dim
    if (scaling := _rope_scaling(meta, arch)) is not None:
        cfg["rope_scaling"] = scaling
    if (bos := meta.get("tokenizer.ggml.bos_token_id")) is not None:
        cfg["bos_token_id"] = int(bos)
    if eos_ids:
        cfg["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    return cfg
