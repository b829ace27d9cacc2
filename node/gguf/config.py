"""The parts of config.json that follow from the tensors: vocabulary and head sizes, tying, biases,
and mlx-lm's quantization block (the most common form as default, per-module overrides for the rest)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .blocks import GROUP_SIZE
from .errors import GGUFImportError
from .reader import TensorInfo
from .weights import SKIPPED_PREFIXES, PlannedTensor


def tensor_facts(tensors: dict[str, TensorInfo], meta: dict[str, Any], arch: str) -> dict[str, Any]:
    """What the config takes from the tensors themselves."""
    embedding = tensors.get("token_embd.weight")
    if embedding is None:
        raise GGUFImportError("the GGUF has no token_embd.weight tensor; it is not a complete model.")
    heads = meta.get(f"{arch}.attention.head_count")
    if not heads:
        raise GGUFImportError(f"the GGUF lacks the metadata key '{arch}.attention.head_count'; the file is incomplete.")
    q = tensors.get("blk.0.attn_q.weight")
    head_dim = int(meta.get(f"{arch}.attention.key_length") or (q.shape[-1] // int(heads) if q else
                                                                 embedding.shape[0] // int(heads)))
    names = [n for n in tensors if not n.startswith(SKIPPED_PREFIXES)]  # a vision tower's biases are not the text's
    return {
        "vocab": embedding.shape[1],
        "head_dim": head_dim,
        "tied": "output.weight" not in tensors,
        "biases": {"attention": any(n.endswith(("attn_q.bias", "attn_k.bias", "attn_v.bias")) for n in names),
                   "mlp": any(n.endswith(("ffn_up.bias", "ffn_down.bias", "ffn_gate.bias")) for n in names)},
    }


def check_layers(planned: list[PlannedTensor], layers: int, arch: str) -> None:
    present = {p.layer for p in planned if p.layer is not None}
    if present != set(range(layers)):
        raise GGUFImportError(
            f"{arch}.block_count says {layers} layers but the tensors cover layers {sorted(present)[:5]}..; "
            "the file is inconsistent.")


def quantization_block(planned: list[PlannedTensor]) -> dict[str, Any] | None:
    """mlx-lm's format: the most common (bits, mode) as default, per-module overrides for the rest."""
    forms = {p.module: (p.bits, p.mode) for p in planned if p.quantized and p.kind == "weight"}
    if not forms:
        return None
    bits, mode = Counter(forms.values()).most_common(1)[0][0]
    block: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": bits, "mode": mode}
    for module, (b, m) in forms.items():
        if (b, m) != (bits, mode):
            block[module] = {"group_size": GROUP_SIZE, "bits": b} | ({"mode": m} if m != "affine" else {})
    return block
