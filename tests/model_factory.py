"""Random-weight models written to disk for tests: real mlx-lm Llama directories of a chosen size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models import llama

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def write_random_llama(
    out: Path,
    *,
    hidden_size: int = 256,
    num_layers: int = 6,
    intermediate_size: int = 512,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 1024,
    dtype: mx.Dtype = mx.float32,
    layers_per_shard: int = 4,
    tokenizer_from: Path | None = None,
    seed: int = 0,
) -> Path:
    """Write config.json and sharded safetensors of a random Llama, layer group by
    layer group so that the writer never holds the whole model in memory."""
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "llama",
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    args = llama.ModelArgs.from_dict(config)
    mx.random.seed(seed)
    scale = 0.02

    def rand(*shape):
        return (mx.random.normal(shape) * scale).astype(dtype)

    groups: list[dict[str, mx.array]] = []
    head = {
        "model.embed_tokens.weight": rand(vocab_size, hidden_size),
        "model.norm.weight": mx.ones((hidden_size,), dtype=dtype),
        "lm_head.weight": rand(vocab_size, hidden_size),
    }
    groups.append(head)
    block = llama.TransformerBlock(args)
    names = [name for name, _ in tree_flatten(block.parameters())]
    for start in range(0, num_layers, layers_per_shard):
        group = {}
        for i in range(start, min(start + layers_per_shard, num_layers)):
            for name, value in tree_flatten(block.parameters()):
                key = f"model.layers.{i}.{name}"
                group[key] = mx.ones(value.shape, dtype=dtype) if "norm" in name else rand(*value.shape)
        groups.append(group)
    del names
    weight_map = {}
    total = len(groups)
    for n, group in enumerate(groups, start=1):
        fname = f"model-{n:05d}-of-{total:05d}.safetensors"
        mx.eval(group)
        mx.save_safetensors(str(out / fname), group, metadata={"format": "mlx"})
        weight_map.update({k: fname for k in group})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    if tokenizer_from is not None:
        for name in TOKENIZER_FILES:
            shutil.copy(tokenizer_from / name, out / name)
    return out


def model_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
