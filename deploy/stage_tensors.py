"""Which tensors, and which files of a model directory or repository, one stage needs.

Large repositories split their weights over several safetensors files and say in
model.safetensors.index.json which file holds each tensor; a node that serves a few layers then
reads (or downloads) only the files holding them. Shared by the shard cutter (deploy.shards) and
the partial Hub download (deploy.hf_fetch).
"""

from __future__ import annotations

from typing import Iterable

from node.tensor_names import EMBEDDING, HEAD, LAYER, NORM, SKIPPED, tensor_role

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files besides the weights that a worker reads.
SMALL_FILES = ("config.json", "generation_config.json")
# The last stage also reads the tokenizer: it constrains tokens to grammars (node/grammar.py).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def stage_tensor_names(names: Iterable[str], layer_start: int, layer_end: int, num_layers: int,
                       tied: bool, extra_layers: int = 0) -> list[str]:
    """The tensors (sorted) that a stage holding layers [layer_start, layer_end) needs.

    Layers: those under its own `layers.{i}.` (node/tensor_names.py: any family's naming, experts
    stacked or one tensor per expert). First stage: the embedding. Last stage: the final norm and the
    head, and the embedding too when tied (the head reuses it). Vision towers and multi-token-
    prediction layers go nowhere (mlx-lm drops them at load). Any other tensor (e.g. a rotary table
    some exporters write) goes to every stage: copying a few stray bytes is cheaper than losing
    something a model class needs, and a loader ignores what its model does not use.
    """
    if not 0 <= layer_start < layer_end <= num_layers:
        raise ValueError(f"layer range [{layer_start}, {layer_end}) is not within the model's {num_layers} layers")
    first, last = layer_start == 0, layer_end == num_layers
    keep: set[str] = set()
    for name in names:
        role = tensor_role(name, num_layers, extra_layers)
        if role.part == SKIPPED:
            continue
        if role.part == LAYER:
            wanted = layer_start <= role.layer < layer_end
        elif role.part == EMBEDDING:
            wanted = first or (last and tied)
        elif role.part in (NORM, HEAD):
            wanted = last
        else:
            wanted = True
        if wanted:
            keep.add(name)
    return sorted(keep)


def has_head(names: Iterable[str]) -> bool:
    """Whether a checkpoint carries an output head. Without one the head is the embedding, whatever
    the config's tie_word_embeddings says (Gemma and Command R tie regardless of it)."""
    return any(tensor_role(n).part == HEAD for n in names)


def files_for_stage(index: dict | None, layer_start: int, layer_end: int, num_layers: int,
                    extra_layers: int = 0) -> list[str]:
    """The weight files (sorted) holding the tensors of a stage with layers [layer_start, layer_end).

    `index` is a parsed model.safetensors.index.json (its "weight_map" maps tensor name -> file);
    None means a repository with no index, whose weights are the single model.safetensors. A layer
    split across two files needs both."""
    if index is None:
        return [WEIGHTS_FILE]
    weight_map = index["weight_map"]
    tied = not has_head(weight_map)
    names = stage_tensor_names(weight_map, layer_start, layer_end, num_layers, tied, extra_layers)
    return sorted({weight_map[name] for name in names})
