"""Tiny random models of every supported family (float32, a few MB), written as model directories
that mlx-lm and the workers load: config.json plus safetensors named as checkpoints name them.

Each family's config is small but keeps what makes the family itself: experts, sliding windows and
their patterns, latent attention, linear attention, multipliers and soft-caps, text_config wrappers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.utils import _get_classes

BASE = dict(hidden_size=64, num_hidden_layers=6, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
            rms_norm_eps=1e-5, vocab_size=128, head_dim=16, max_position_embeddings=512, rope_theta=10000.0,
            tie_word_embeddings=False)
_MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[],
            norm_topk_prob=True)

# model_type -> what its config adds to BASE. Six layers: cuts fall on both sides of every pattern.
FAMILY_CONFIGS: dict[str, dict] = {
    "llama": dict(tie_word_embeddings=True),
    "mistral": {},
    "qwen2": dict(tie_word_embeddings=True),
    "qwen3": {},
    "qwen3_moe": dict(_MOE, mlp_only_layers=[0], decoder_sparse_step=1),
    "qwen3_next": dict(_MOE, linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
                       linear_value_head_dim=16, linear_conv_kernel_dim=4, shared_expert_intermediate_size=32,
                       partial_rotary_factor=0.5, full_attention_interval=3),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "phi3": {},
    "gemma2": dict(query_pre_attn_scalar=16, attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
    "gemma3_text": dict(sliding_window=8, sliding_window_pattern=3, query_pre_attn_scalar=16),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
                    layer_types=["sliding_attention", "full_attention"] * 3),
    "deepseek_v3": dict(moe_intermediate_size=32, n_shared_experts=1, n_routed_experts=8, kv_lora_rank=16,
                        q_lora_rank=24, qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=16, num_experts_per_tok=2,
                        first_k_dense_replace=1, n_group=2, topk_group=1, num_key_value_heads=4),
    "glm4": dict(attention_bias=False, partial_rotary_factor=0.5),
    "glm4_moe": dict(moe_intermediate_size=32, norm_topk_prob=True, n_group=1, topk_group=1, n_shared_experts=1,
                     n_routed_experts=8, routed_scaling_factor=1.0, num_experts_per_tok=2, first_k_dense_replace=1,
                     rope_scaling=None, use_qk_norm=True, attention_bias=False, partial_rotary_factor=0.5),
    "olmo2": {},
    "granite": dict(logits_scaling=2.0, attention_multiplier=0.3, embedding_multiplier=3.0, residual_multiplier=0.5,
                    attention_bias=False, mlp_bias=False),
    "granitemoe": dict(logits_scaling=2.0, attention_multiplier=0.3, embedding_multiplier=3.0,
                       residual_multiplier=0.5, attention_bias=False, num_local_experts=4, num_experts_per_tok=2),
    "starcoder2": {},
    "cohere": dict(logit_scale=0.5, use_qk_norm=False),
}
# Vision-language checkpoints that mlx-lm serves as text: model_type -> the text model they wrap.
WRAPPERS = {"mistral3": "llama", "gemma3": "gemma3_text"}

ALL_TYPES = tuple(FAMILY_CONFIGS) + tuple(WRAPPERS)


def family_config(model_type: str, **overrides) -> dict:
    """config.json of a tiny model of `model_type`."""
    if model_type in WRAPPERS:
        text = family_config(WRAPPERS[model_type], **overrides)
        vocab = text["vocab_size"]
        return {"model_type": model_type, "vocab_size": vocab, "text_config": text,
                "vision_config": {"hidden_size": 16}}
    return {**BASE, "model_type": model_type, **FAMILY_CONFIGS[model_type], **overrides}


def build_model(config: dict, seed: int = 0):
    """mlx-lm's own model class for `config`, random float32 weights (evaluated)."""
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(json.loads(json.dumps(config))))
    mx.eval(model.parameters())
    return model


def _per_expert(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Hugging Face's layout of stacked experts: one tensor per expert (what mlx-lm's sanitize stacks)."""
    out = {}
    for name, value in weights.items():
        if ".mlp.switch_mlp." in name:
            prefix, proj = name.split(".mlp.switch_mlp.")
            for e in range(value.shape[0]):
                out[f"{prefix}.mlp.experts.{e}.{proj}"] = value[e]
        else:
            out[name] = value
    return out


def write_tiny_model(directory: Path, model_type: str, *, seed: int = 0, hf_layout: bool = False,
                     tokenizer_from: Path | None = None, **overrides) -> Path:
    """A model directory of a tiny random `model_type`. `hf_layout`: experts one tensor each, as
    Hugging Face checkpoints hold them. `tokenizer_from`: copy that model's tokenizer (and its
    vocabulary size), for tests that run a whole cluster (the coordinator tokenizes)."""
    if tokenizer_from is not None:
        overrides.setdefault("vocab_size", json.loads((tokenizer_from / "config.json").read_text())["vocab_size"])
    config = family_config(model_type, **overrides)
    model = build_model(config, seed)
    weights = dict(tree_flatten(model.parameters()))
    if hf_layout:
        weights = _per_expert(weights)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    mx.save_safetensors(str(directory / "model.safetensors"), weights, metadata={"format": "mlx"})
    if tokenizer_from is not None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tokenizer_from / name, directory / name)
    return directory


def write_quantized(source: Path, directory: Path, *, bits: int = 4, group_size: int = 32) -> Path:
    """`source` quantized the way mlx-lm converts checkpoints (like the 4-bit demo model), with
    `source`'s tokenizer files, if any."""
    from mlx_lm.utils import load_model, quantize_model, save_config, save_model

    model, config = load_model(source)
    model, config = quantize_model(model, config, group_size=group_size, bits=bits)
    save_model(directory, model)
    save_config(config, directory / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, directory / name)
    return directory
