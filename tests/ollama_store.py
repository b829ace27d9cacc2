"""An Ollama model store built the way `ollama pull` leaves one: manifests/<host>/<namespace>/<model>/<tag>
JSON naming content-addressed blobs (blobs/sha256-<hex>): the GGUF model layer, a params layer
(stop strings), a system prompt, a template and a config."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

MEDIA = "application/vnd.ollama.image."


def _blob(store: Path, data: bytes | None = None, *, file: Path | None = None) -> dict:
    """Store bytes (or a file, hard-linked when it can be) under their digest; the manifest's layer entry."""
    digest = hashlib.sha256()
    if file is not None:
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
    else:
        digest.update(data)
    hexdigest = digest.hexdigest()
    path = store / "blobs" / f"sha256-{hexdigest}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        if file is None:
            path.write_bytes(data)
        else:
            try:
                os.link(file, path)
            except OSError:
                shutil.copyfile(file, path)
    return {"digest": f"sha256:{hexdigest}", "size": path.stat().st_size}


def add_model(store: Path, name: str, gguf: Path | None, *, params: dict | None = None, system: str | None = None,
              template: str = "{{ .Prompt }}", host: str = "registry.ollama.ai", namespace: str = "library",
              other_layers: list[tuple[str, bytes]] = ()) -> Path:
    """Add `name` (model:tag) to the store; `gguf=None` makes a manifest without a model layer (as newer
    safetensors-based pulls are). Returns the manifest's path."""
    model, _, tag = name.partition(":")
    layers = []
    if gguf is not None:
        layers.append({"mediaType": MEDIA + "model", **_blob(store, file=gguf)})
    for kind, data in other_layers:
        layers.append({"mediaType": MEDIA + kind, **_blob(store, data)})
    layers.append({"mediaType": MEDIA + "template", **_blob(store, template.encode())})
    if system is not None:
        layers.append({"mediaType": MEDIA + "system", **_blob(store, system.encode())})
    if params is not None:
        layers.append({"mediaType": MEDIA + "params", **_blob(store, json.dumps(params).encode())})
    config = _blob(store, json.dumps({"model_format": "gguf" if gguf else "safetensors"}).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
                "layers": layers}
    path = store / "manifests" / host / namespace / model / (tag or "latest")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path
