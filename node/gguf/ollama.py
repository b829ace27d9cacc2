"""Models already pulled by Ollama, found by name in its store and read in place (nothing is copied).

The store is `$OLLAMA_MODELS`, else `~/.ollama/models`, else the Linux service's
`/usr/share/ollama/.ollama/models`. `manifests/<host>/<namespace>/<model>/<tag>` is a JSON manifest;
its layer of media type `application/vnd.ollama.image.model` is the GGUF, stored as
`blobs/sha256-<hex>`; a `.params` layer holds options (stop strings among them) and a `.system`
layer a default system prompt. Manifests without a model layer (newer safetensors-based ones) are
not GGUF. `qwen3:30b-a3b` is `registry.ollama.ai/library/qwen3:30b-a3b`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GGUFImportError

DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
MODEL_LAYER = "application/vnd.ollama.image.model"
PARAMS_LAYER = "application/vnd.ollama.image.params"
SYSTEM_LAYER = "application/vnd.ollama.image.system"


def store_dirs(explicit: Path | str | None = None) -> list[Path]:
    """Where to look, in order."""
    if explicit:
        return [Path(explicit).expanduser()]
    if env := os.environ.get("OLLAMA_MODELS"):
        return [Path(env).expanduser()]
    return [Path("~/.ollama/models").expanduser(), Path("/usr/share/ollama/.ollama/models")]


@dataclass(frozen=True)
class OllamaModel:
    name: str                # as the user wrote it (qwen3:30b-a3b)
    manifest: Path
    gguf: Path | None        # the model blob; None for a manifest that holds no GGUF
    size: int
    stop: tuple[str, ...] = ()
    system: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.gguf.name.removeprefix("sha256-") if self.gguf else ""


def _split(name: str) -> tuple[str, str, str, str]:
    """'qwen3:30b' -> (registry.ollama.ai, library, qwen3, 30b); 'ns/m', 'host/ns/m:tag' as written."""
    base, _, tag = name.partition(":")
    parts = [p for p in base.split("/") if p]
    if not parts or len(parts) > 3 or not all(p.replace("-", "").replace(".", "").replace("_", "").isalnum()
                                             for p in parts) or (tag and "/" in tag):
        raise GGUFImportError(f"{name!r} is not an Ollama model name (expected NAME[:TAG], e.g. qwen3:30b-a3b)")
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts
    return host, namespace, model, tag or DEFAULT_TAG


def _blob(store: Path, digest: str) -> Path:
    return store / "blobs" / digest.replace(":", "-")


def _read_manifest(store: Path, manifest: Path, name: str) -> OllamaModel:
    try:
        layers = json.loads(manifest.read_text()).get("layers") or []
    except (OSError, ValueError) as exc:
        raise GGUFImportError(f"Ollama manifest {manifest} of {name!r} cannot be read: {exc}") from exc
    by_type = {layer.get("mediaType"): layer for layer in layers if isinstance(layer, dict)}
    model = by_type.get(MODEL_LAYER)
    gguf = _blob(store, model["digest"]) if model and model.get("digest") else None
    params: dict = {}
    if (layer := by_type.get(PARAMS_LAYER)) and (path := _blob(store, layer.get("digest", ""))).is_file():
        try:
            params = json.loads(path.read_text())
        except ValueError:
            params = {}
    system = None
    if (layer := by_type.get(SYSTEM_LAYER)) and (path := _blob(store, layer.get("digest", ""))).is_file():
        system = path.read_text()
    stop = params.get("stop") or []
    return OllamaModel(name, manifest, gguf, int(model.get("size", 0)) if model else 0,
                       tuple(s for s in ([stop] if isinstance(stop, str) else stop) if isinstance(s, str)),
                       system, params)


def find(name: str, store: Path | str | None = None) -> OllamaModel:
    """The pulled model `name`, with its GGUF blob; a clear error when it is missing or not GGUF."""
    host, namespace, model, tag = _split(name)
    searched = store_dirs(store)
    for root in searched:
        manifest = root / "manifests" / host / namespace / model / tag
        if manifest.is_file():
            found = _read_manifest(root, manifest, name)
            if found.gguf is None:
                raise GGUFImportError(f"Ollama's {name!r} ({manifest}) holds no GGUF model layer (a newer "
                                      "safetensors-based model?); point model.path at its Hugging Face checkpoint")
            if not found.gguf.is_file():
                raise GGUFImportError(f"Ollama's {name!r} names the blob {found.gguf.name}, which is missing from "
                                      f"{found.gguf.parent}; run `ollama pull {name}` again")
            return found
    where = ", ".join(str(r) for r in searched)
    raise GGUFImportError(f"no Ollama model {name!r} in {where}; `ollama list` shows what is pulled (or set "
                          "OLLAMA_MODELS / --ollama-dir to the store)")


def list_models(store: Path | str | None = None) -> list[OllamaModel]:
    """Every manifest in the stores, GGUF or not."""
    out = []
    for root in store_dirs(store):
        manifests = root / "manifests"
        if not manifests.is_dir():
            continue
        for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
            host, namespace, model, tag = manifest.relative_to(manifests).parts[-4:]
            # As `ollama list` shows it: the default registry and namespace left out.
            short = (model if namespace == DEFAULT_NAMESPACE else f"{namespace}/{model}") if host == DEFAULT_HOST \
                else f"{host}/{namespace}/{model}"
            out.append(_read_manifest(root, manifest, f"{short}:{tag}"))
    return out
