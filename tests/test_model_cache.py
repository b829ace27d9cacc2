"""The import cache is keyed by a GGUF's content: a second `up` of the same file imports nothing and
reads nothing, a copy or a touched file (same bytes) reuses the import after one hash, and a file
with other bytes is a new import."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import cluster.launch.source_hashes as source_hashes
from cluster.inventory import ModelSpec
from cluster.launch.model_source import resolve_model

FIXTURES = Path(__file__).resolve().parent / "data" / "gguf"


@pytest.fixture
def hashes(monkeypatch, tmp_path: Path) -> list[Path]:
    monkeypatch.setenv("BOLTPIPE_HOME", str(tmp_path / "home"))
    read: list[Path] = []
    real = source_hashes.hash_source

    def counting(path: Path, progress: bool):
        read.append(path)
        return real(path, progress)

    monkeypatch.setattr(source_hashes, "hash_source", counting)
    return read


def _stamps(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def test_the_same_content_is_imported_once(hashes: list[Path], tmp_path: Path) -> None:
    original = tmp_path / "a" / "model.gguf"
    original.parent.mkdir()
    shutil.copyfile(FIXTURES / "tiny-llama-Q4_K_M.gguf", original)
    first = resolve_model(ModelSpec(gguf=str(original)), progress=False)
    assert first.path.name.startswith("gguf-") and len(hashes) == 1
    stamps = _stamps(first.path)

    again = resolve_model(ModelSpec(gguf=str(original)), progress=False)
    assert again.path == first.path and len(hashes) == 1  # nothing read: the memo knows the file
    os.utime(original, ns=(1, 1))                          # touched: hashed again, same import
    copy = tmp_path / "b" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)                        # copied under another name: the same
    assert resolve_model(ModelSpec(gguf=str(original)), progress=False).path == first.path
    assert resolve_model(ModelSpec(gguf=str(copy)), progress=False).path == first.path
    assert len(hashes) == 3 and _stamps(first.path) == stamps

    other = resolve_model(ModelSpec(gguf=str(FIXTURES / "tiny-llama-Q8_0.gguf")), progress=False)
    assert other.path != first.path and len(hashes) == 4


def test_a_broken_memo_is_rebuilt(hashes: list[Path], tmp_path: Path) -> None:
    info = resolve_model(ModelSpec(gguf=str(FIXTURES / "tiny-llama-Q4_0.gguf")), progress=False)
    (info.path.parent / source_hashes.MEMO).write_text("{not json")
    assert resolve_model(ModelSpec(gguf=str(FIXTURES / "tiny-llama-Q4_0.gguf")), progress=False).path == info.path
    assert len(hashes) == 2
