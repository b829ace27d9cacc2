"""A GGUF file's content hash, remembered per (path, size, modification time) in the model cache, so
that the import cache is keyed by content (a copied, moved or touched file is the same model) while a
second `cluster up` of an unchanged file reads none of it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cluster import paths
from node.gguf.marker import hash_source

MEMO = "source-hashes.json"


def _memo_path() -> Path:
    return paths.model_cache() / MEMO


def _read() -> dict:
    try:
        memo = json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def content_sha256(path: Path, *, progress: bool = True) -> str:
    path = path.resolve()
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    memo = _read()
    known = memo.get(str(path))
    if isinstance(known, dict) and {k: known.get(k) for k in stamp} == stamp and isinstance(known.get("sha256"), str):
        return known["sha256"]
    sha = hash_source(path, progress).sha256
    memo[str(path)] = {**stamp, "sha256": sha}
    _memo_path().parent.mkdir(parents=True, exist_ok=True)
    tmp = _memo_path().with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo, indent=1) + "\n")
    os.replace(tmp, _memo_path())  # never a half-written memo, even with two `up`s at once
    return sha
