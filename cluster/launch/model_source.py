"""From the inventory's `model:` to a model directory the workers can load: GGUF files (a path, the
bundled demo, or a model Ollama pulled, read in place from its store) are imported once into the
model cache; an Ollama model's stop strings and system prompt become the API's defaults."""

from __future__ import annotations

import logging
from pathlib import Path

from cluster import paths
from cluster.api.openai_shapes import ModelDefaults
from cluster.inventory import BUNDLED_MODEL, ModelSpec
from cluster.launch.demo_model import bundled_gguf_path
from cluster.launch.source_hashes import content_sha256
from node.gguf import import_gguf, ollama
from node.model_config import ModelDirError, ModelInfo, read_model_info

log = logging.getLogger(__name__)
IMPORT_MARKER = "boltpipe_import.json"


def cached_import_dir(sha256: str) -> Path:
    """A cache entry per GGUF content: the same file under any name, or as an Ollama blob, is imported once."""
    return paths.model_cache() / f"gguf-{sha256[:16]}"


def model_defaults(spec: ModelSpec) -> ModelDefaults:
    if spec.ollama is None:
        return ModelDefaults()
    found = ollama.find(spec.ollama, spec.ollama_dir)
    return ModelDefaults(found.stop, found.system)


def resolve_model(spec: ModelSpec, *, progress: bool = True) -> ModelInfo:
    if spec.path is not None:
        return read_model_info(spec.path)
    if spec.ollama is not None:
        found = ollama.find(spec.ollama, spec.ollama_dir)
        # The blob's name is its content hash: a second `up` finds the import without reading the file.
        gguf, target = found.gguf, cached_import_dir(found.digest)
    else:
        assert spec.gguf is not None
        gguf = bundled_gguf_path() if spec.gguf == BUNDLED_MODEL else Path(spec.gguf)
        if not gguf.is_file():
            raise ModelDirError(f"model.gguf: {gguf} does not exist")
        target = cached_import_dir(content_sha256(gguf, progress=progress))
    if not (target / IMPORT_MARKER).is_file():
        log.info("importing %s into %s (once)", gguf.name, target)
        import_gguf(gguf, target, progress=progress)
    return read_model_info(target)


def served_model_name(spec: ModelSpec, info: ModelInfo) -> str:
    if spec.name:
        return spec.name
    if spec.gguf == BUNDLED_MODEL:
        return "smollm2-135m-instruct"
    if spec.ollama:
        return spec.ollama
    source = Path(spec.gguf) if spec.gguf else info.path
    return source.stem if spec.gguf else source.name
