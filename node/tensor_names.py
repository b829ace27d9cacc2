"""Which part of a model a checkpoint tensor belongs to, read from its name alone.

The shard cutter and the planner see weight files, not mlx-lm modules, and checkpoints name the
same parts in several ways: `model.layers.3.` (most), `language_model.model.layers.3.` or
`model.language_model.layers.3.` (vision-language checkpoints), per-expert tensors
(`mlp.experts.7.gate_proj`) that mlx-lm's `sanitize` stacks at load. A layer is whatever sits under
a `layers.N.` segment of the text model; vision towers and the multi-token-prediction layers some
checkpoints carry beyond `num_hidden_layers` (mlx-lm drops both at load) belong to no stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_NORM = re.compile(r"(?:^|\.)(?:norm|final_layernorm|final_norm|ln_f)\.(?:weight|bias)$")
# Parts a text-only stage never holds: the towers and projectors of vision-language checkpoints,
# and the multi-token-prediction head of Qwen3-Next.
_SKIPPED = re.compile(r"(?:^|\.)(?:vision_tower|vision_model|visual|multi_modal_projector|mm_projector|"
                      r"audio_tower|mtp)\.")

LAYER, EMBEDDING, NORM, HEAD, OTHER, SKIPPED = "layer", "embedding", "norm", "head", "other", "skipped"


@dataclass(frozen=True)
class Role:
    part: str              # one of the constants above
    layer: int | None = None


def tensor_role(name: str, num_layers: int | None = None, extra_layers: int = 0) -> Role:
    """The part `name` belongs to. Layers at `num_layers` and up are SKIPPED when they are among the
    `extra_layers` a checkpoint may carry past the decoder (multi-token prediction), and raise
    ValueError beyond those: then the config and the weights disagree."""
    if _SKIPPED.search(name):
        return Role(SKIPPED)
    if m := _LAYER.search(name):
        index = int(m.group(1))
        if num_layers is not None and index >= num_layers:
            if index < num_layers + extra_layers:
                return Role(SKIPPED)
            raise ValueError(f"tensor {name!r} belongs to layer {index}, beyond the model's {num_layers} layers; "
                             "is num_layers right?")
        return Role(LAYER, index)
    if "embed_tokens." in name:
        return Role(EMBEDDING)
    if name.startswith("lm_head.") or ".lm_head." in name:
        return Role(HEAD)
    if _NORM.search(name):
        return Role(NORM)
    return Role(OTHER)


def extra_layer_count(text_config: dict) -> int:
    """Layers a checkpoint holds past num_hidden_layers for multi-token prediction (DeepSeek-V3, GLM-4.5)."""
    value = text_config.get("num_nextn_predict_layers") or 0
    return int(value) if isinstance(value, int) and value > 0 else 0
