"""Which files of a Hugging Face model repository one stage needs, and fetching just those.

Large repositories split their weights over several safetensors files and say in
model.safetensors.index.json which file holds each tensor; a node that serves a few layers then
downloads only the files holding them, not the whole model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from deploy.shards import SMALL_FILES, WEIGHTS_FILE, stage_tensor_names

__all__ = ["SMALL_FILES", "files_for_stage", "download_stage_files"]


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


def download_stage_files(repo_id: str, files: Iterable[str], dest: str | Path, revision: str | None = None) -> list[Path]:
    """Download `files` of `repo_id` into `dest` with huggingface_hub (its cache, token and retries).

    Deliberately thin: no hub is reachable from the test machines, so nothing here is tested; the
    choice of files (files_for_stage) is."""
    from huggingface_hub import hf_hub_download  # needed only here; comes with mlx-lm's dependencies

    return [Path(hf_hub_download(repo_id, name, revision=revision, local_dir=str(dest))) for name in files]
