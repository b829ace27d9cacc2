"""Fetching from a Hugging Face model repository just the files one stage needs (which files those
are: deploy.stage_tensors.files_for_stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def download_stage_files(repo_id: str, files: Iterable[str], dest: str | Path, revision: str | None = None) -> list[Path]:
    """Download `files` of `repo_id` into `dest` with huggingface_hub (its cache, token and retries).

    Deliberately thin: no hub is reachable from the test machines, so nothing here is tested; the
    choice of files (files_for_stage) is."""
    from huggingface_hub import hf_hub_download  # needed only here; comes with mlx-lm's dependencies

    return [Path(hf_hub_download(repo_id, name, revision=revision, local_dir=str(dest))) for name in files]
