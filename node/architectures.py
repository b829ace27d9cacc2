"""Which mlx-lm model types a worker serves, and how a checkpoint's config names its text model.

The stage mechanism (node/stage_model.py) needs no code per architecture: it runs each family's
own mlx-lm classes, caches and mask rules. What is listed here is what the tests check token for
token against mlx-lm in one process (tests/test_architectures.py); any other type is refused with
the nearest listed family, rather than served on trust.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    model_type: str
    examples: str        # checkpoints people run
    notes: str = ""      # what is particular about it (the README's table shows this)
    # Why a worker computes its sessions one at a time instead of batching them (tests/
    # test_batched_stages.py checks that every other family batches exactly, and that this still fails).
    unbatched: str = ""


FAMILIES = {f.model_type: f for f in (
    Family("llama", "Llama 3.x, SmolLM2, TinyLlama"),
    Family("mistral", "Mistral 7B, Mistral Nemo"),
    Family("qwen2", "Qwen2.5"),
    Family("qwen3", "Qwen3 dense"),
    Family("qwen3_moe", "Qwen3-30B-A3B, Qwen3-235B-A22B", "mixture of experts"),
    Family("qwen3_next", "Qwen3-Next-80B-A3B", "linear attention (gated delta) + full attention, experts"),
    Family("mixtral", "Mixtral 8x7B, 8x22B", "mixture of experts"),
    Family("phi3", "Phi-3, Phi-4"),
    Family("gemma2", "Gemma 2", "logit soft-capping",
           unbatched="mlx-lm's gemma2 attention cannot apply a batched mask to its grouped queries"),
    Family("gemma3_text", "Gemma 3 (text)", "sliding-window and global layers"),
    Family("gemma3", "Gemma 3 (vision-language checkpoints, served as text)", "text_config"),
    Family("mistral3", "Mistral Small 3.x, Magistral (vision-language checkpoints, served as text)",
           "text_config"),
    Family("gpt_oss", "gpt-oss-20b, gpt-oss-120b", "experts, sliding-window layers, attention sinks"),
    Family("deepseek_v3", "DeepSeek-V3, R1, Kimi K2", "multi-head latent attention (the cache holds the latent), "
           "experts"),
    Family("glm4", "GLM-4"),
    Family("glm4_moe", "GLM-4.5, GLM-4.5-Air", "mixture of experts"),
    Family("olmo2", "OLMo 2"),
    Family("granite", "Granite 3.x", "embedding, residual and logit multipliers"),
    Family("granitemoe", "Granite 3.x MoE", "mixture of experts"),
    Family("starcoder2", "StarCoder2"),
    Family("cohere", "Command R", "logit scale"),
)}

SUPPORTED_MODEL_TYPES = tuple(FAMILIES)

# Module prefixes of parts a text-only stage never holds (vision towers of VLM checkpoints).
NON_TEXT_PREFIXES = ("vision_tower", "vision_model", "visual", "multi_modal_projector", "mm_projector",
                     "audio_tower", "model.vision_tower", "model.multi_modal_projector", "model.visual")


def text_config(config: dict) -> dict:
    """The decoder's own settings: a VLM checkpoint keeps them in `text_config` (with some, such as
    the vocabulary size, at the top level)."""
    inner = config.get("text_config")
    if not isinstance(inner, dict):
        return config
    return {**{k: v for k, v in config.items() if k != "text_config"}, **inner}


# Where the closest name is not the closest architecture.
_NEAREST = {"gemma": "gemma2", "gemma3n": "gemma3_text", "gemma4": "gemma3", "gemma4_text": "gemma3_text",
            "qwen2_moe": "qwen3_moe", "olmoe": "qwen3_moe", "deepseek": "deepseek_v3", "deepseek_v2": "deepseek_v3",
            "deepseek_v32": "deepseek_v3", "kimi_k2": "deepseek_v3", "phi": "phi3", "phimoe": "mixtral",
            "cohere2": "cohere", "qwen3_5": "qwen3_next", "qwen3_5_moe": "qwen3_next", "llama4": "llama",
            "ministral3": "mistral", "glm": "glm4", "granitemoehybrid": "granitemoe"}


def nearest_family(model_type: str) -> str:
    """The supported family closest to `model_type` (qwen2_moe -> qwen3_moe, gemma -> gemma2)."""
    if model_type in _NEAREST:
        return _NEAREST[model_type]
    close = difflib.get_close_matches(model_type, SUPPORTED_MODEL_TYPES, n=1, cutoff=0.0)
    return close[0] if close else SUPPORTED_MODEL_TYPES[0]


def unsupported_reason(model_type: object) -> str | None:
    """None for a supported type; otherwise what is missing, and the nearest family served."""
    if isinstance(model_type, str) and model_type in FAMILIES:
        return None
    if not isinstance(model_type, str) or not model_type:
        return "config.json names no model_type"
    if importlib.util.find_spec(f"mlx_lm.models.{model_type}") is None:
        missing = "mlx-lm has no model class for it"
    else:
        missing = ("mlx-lm has a model class for it, but its stages are not among those checked token for token "
                   "against mlx-lm in one process")
    nearest = nearest_family(model_type)
    return (f"model_type {model_type!r} is not served: {missing}; the nearest supported family is {nearest!r} "
            f"({FAMILIES[nearest].examples}). Supported: {', '.join(SUPPORTED_MODEL_TYPES)} (README, Supported models)")


def batch_problem(model_type: str) -> str | None:
    """Why a stage of this family must not batch sessions (None: it may)."""
    family = FAMILIES.get(model_type)
    return family.unbatched or None if family else None
