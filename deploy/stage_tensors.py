"""Which tensors, and which files of a model directory or repository, one stage needs.

Large repositories split their weights over several safetensors files and say in
model.safetensors.index.json which file holds each tensor; a node that serves a few layers then
reads (or downloads) only the files holding them. Shared by the shard cutter (deploy.shards) and
the partial Hub download (deploy.hf_fetch).
"""

from __future__ import annotations

import re
from typing import Iterable

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files besides the weights that a worker reads; not the tokenizer: workers never tokenize.
SMALL_FILES = ("config.json", "generation_config.json")

_LAYER = re.compile(r"model\.layers\.(\d+)\.")


def stage_tensor_names(names: Iterable[str], layer_start: int, layer_end: int, num_layers: int,
                       tied: bool) -> list[str]:
    """The tensors (sorted) that a stage holding layers [layer_start, layer_end) needs.

    Layers: model.layers.{i}.* for its own i. First stage: model.embed_tokens.*. Last stage:
    model.norm.* and lm_head.*, and the embedding too when tied (the head reuses it). A tensor that is
    neither a layer's nor one of these (e.g. a rotary table some exporters write) goes to every stage:
    copying a few stray bytes is cheaper than losing something a model class needs, and a loader
    ignores what its model does not use.
    """
    if not 0 <= layer_start < layer_end <= num_layers:
        raise ValueError(f"layer range [{layer_start}, {layer_end}) is not within the model's {num_layers} layers")
    first, last = layer_start == 0, layer_end == num_layers
    keep: set[str] = set()
    for name in names:
        if m := _LAYER.match(name):
            index = int(m.group(1))
            if index >= num_layers:
                raise ValueError(f"tensor {name!r} belongs to layer {index}, beyond the model's {num_layers} layers; "
                                 "is num_layers right?")
            wanted = layer_start <= index < layer_end
        elif name.startswith("model.embed_tokens."):
            wanted = first or (last and tied)
        elif name.startswith(("model.norm.", "lm_head.")):
            wanted = last
        else:
            wanted = True
        if wanted:
            keep.add(name)
    return sorted(keep)


def files_for_stage(index: dict | None, layer_start: int, layer_end: int, num_layers: int,
                    tied: bool) -> list[str]:
    """The weight files (sorted) holding the tensors of a stage with layers [layer_start, layer_end).

    `index` is a parsed model.safetensors.index.json (its "weight_map" maps tensor name -> file);
    None means a repository with no index, whose weights are the single model.safetensors. A layer
    split across two files needs both."""
    if index is None:
        return [WEIGHTS_FILE]
    weight_map = index["weight_map"]
    names = stage_tensor_names(weight_map, layer_start, layer_end, num_layers, tied)
    return sorted({weight_map[name] for name in names})
