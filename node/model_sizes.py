"""How many bytes each part of a model takes, read from safetensors headers alone.

Placement needs per-layer sizes before any worker loads anything, and a model may be far larger
than the machine that plans it, so only each file's JSON header is read (never the weights).
Format: u64 little-endian header length N, then N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from node.architectures import text_config
from node.tensor_names import EMBEDDING, HEAD, LAYER, NORM, SKIPPED, extra_layer_count, tensor_role

# Real headers are a few hundred kB even for very large models; anything far bigger is corruption,
# and refusing it keeps a bad file from making us allocate gigabytes.
MAX_HEADER_BYTES = 100_000_000



class ModelSizeError(ValueError):
    """A model directory whose sizes cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelSizes:
    layer_bytes: tuple[int, ...]  # index i = bytes of layer i's tensors (experts included)
    embedding_bytes: int
    norm_bytes: int
    head_bytes: int  # 0 when tied
    other_bytes: int  # tensors outside embedding/layers/norm/head; no stage loads them
    tied: bool

    @property
    def num_layers(self) -> int:
        return len(self.layer_bytes)

    @property
    def total_bytes(self) -> int:
        return sum(self.layer_bytes) + self.embedding_bytes + self.norm_bytes + self.head_bytes + self.other_bytes

    def stage_bytes(self, start: int, end: int, *, first: bool, last: bool) -> int:
        """Weights a stage holding layers [start, end) keeps resident. The first stage embeds;
        the last normalises and projects to the vocabulary, which with tied embeddings means it
        holds the embedding too (a single stage holds it once)."""
        if not 0 <= start <= end <= self.num_layers:
            raise ValueError(f"layer range [{start}, {end}) is outside the model's {self.num_layers} layers")
        total = sum(self.layer_bytes[start:end])
        if first or (last and self.tied):
            total += self.embedding_bytes
        if last:
            total += self.norm_bytes + self.head_bytes
        return total


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets within the data section, which starts at SafetensorsHeader.data_start
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int  # file offset of the first data byte: 8 + header length


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """One safetensors file's parsed and checked header (its weights are never read)."""
    try:
        with open(path, "rb") as fh:
            file_size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise ModelSizeError(f"{path.name}: truncated: {len(prefix)} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES:
                raise ModelSizeError(f"{path.name}: header length {n} bytes is implausible (over {MAX_HEADER_BYTES}); "
                                     "the file is corrupt or not safetensors")
            blob = fh.read(n)
    except OSError as exc:
        raise ModelSizeError(f"{path.name}: cannot be read: {exc.strerror or exc}") from exc
    if len(blob) < n:
        raise ModelSizeError(f"{path.name}: truncated: the header says {n} bytes but only {len(blob)} follow")
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSizeError(f"{path.name}: the header is not valid JSON ({exc}); the file is corrupt") from exc
    if not isinstance(header, dict):
        raise ModelSizeError(f"{path.name}: the header is not a JSON object; the file is corrupt")
    data_bytes = file_size - 8 - n
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ModelSizeError(f"{path.name}: __metadata__ is not a JSON object; the file is corrupt")
    tensors: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise ModelSizeError(f"{path.name}: tensor {name!r} has no valid data_offsets [begin, end]")
        if offsets[1] > data_bytes:
            raise ModelSizeError(f"{path.name}: truncated: tensor {name!r} ends at byte {offsets[1]} of the data "
                                 f"but the file holds only {data_bytes} data bytes")
        tensors[name] = TensorEntry(dtype=str(entry.get("dtype")), shape=tuple(entry.get("shape") or ()),
                                    begin=offsets[0], end=offsets[1])
    return SafetensorsHeader(tensors=tensors, metadata=dict(metadata), data_start=8 + n)


def tensor_sizes(path: Path) -> dict[str, int]:
    """Tensor name -> byte size from one safetensors file's header."""
    return {name: t.nbytes for name, t in read_safetensors_header(path).tensors.items()}


def weight_files(model_dir: Path) -> list[Path]:
    """The directory's weight files: those the index names when there is one, else model*.safetensors."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ModelSizeError(f"{index.name}: not a valid safetensors index (needs a weight_map): {exc}") from exc
        missing = [name for name in names if not (model_dir / name).is_file()]
        if missing:
            raise ModelSizeError(f"{index.name} names weight files that are missing from {model_dir}: {', '.join(missing)}")
        return [model_dir / name for name in names]
    return sorted(model_dir.glob("model*.safetensors"))


def _config_layers(model_dir: Path) -> tuple[int | None, int]:
    """(num_hidden_layers, multi-token-prediction layers past them) from config.json, if it says."""
    config = model_dir / "config.json"
    if not config.is_file():
        return None, 0
    try:
        text = text_config(json.loads(config.read_text()))
        value = text.get("num_hidden_layers")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ModelSizeError(f"{config.name} in {model_dir} is not a valid JSON object: {exc}") from exc
    return (int(value) if value is not None else None), extra_layer_count(text)


def read_model_sizes(model_dir: Path | str, num_layers: int | None = None) -> ModelSizes:
    """Sizes of a model directory's parts. `num_layers` defaults to config.json's
    num_hidden_layers (else the highest layer index + 1); every layer must have tensors."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise ModelSizeError(f"model directory {model_dir} does not exist")
    files = weight_files(model_dir)
    if not files:
        raise ModelSizeError(f"{model_dir} holds no model*.safetensors weight files")
    configured, extra_layers = _config_layers(model_dir)
    if num_layers is None:
        num_layers = configured
    layers: dict[int, int] = {}
    parts = {EMBEDDING: 0, NORM: 0, HEAD: 0, "other": 0}
    seen: dict[str, str] = {}
    for path in files:
        for name, size in tensor_sizes(path).items():
            if name in seen:
                raise ModelSizeError(f"tensor {name!r} appears in both {seen[name]} and {path.name}")
            seen[name] = path.name
            role = tensor_role(name)  # layers past the config's count are reported below, all at once
            if role.part == SKIPPED or (role.part == LAYER and num_layers is not None
                                        and num_layers <= role.layer < num_layers + extra_layers):
                continue  # vision towers, multi-token-prediction layers: no stage holds them
            if role.part == LAYER:
                layers[role.layer] = layers.get(role.layer, 0) + size
            else:
                parts[role.part if role.part in parts else "other"] += size
    if num_layers is None:
        num_layers = max(layers, default=-1) + 1
    missing = [i for i in range(num_layers) if i not in layers]
    extra = sorted(i for i in layers if i >= num_layers)
    if missing or extra or num_layers == 0:
        problems = []
        if missing:
            problems.append(f"no tensors for layer(s) {_ranges(missing)}")
        if extra:
            problems.append(f"tensors for layer(s) {_ranges(extra)} beyond the {num_layers} the config declares")
        if num_layers == 0:
            problems.append("no transformer layers at all")
        raise ModelSizeError(f"{model_dir}: {'; '.join(problems)} (is a weight file missing or from another model?)")
    return ModelSizes(
        layer_bytes=tuple(layers[i] for i in range(num_layers)),
        embedding_bytes=parts[EMBEDDING],
        norm_bytes=parts[NORM],
        head_bytes=parts[HEAD],
        other_bytes=parts["other"],
        tied=parts[HEAD] == 0,
    )


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5": short enough for an error message even with many layers."""
    out, start = [], indices[0]
    for prev, cur in zip(indices, indices[1:] + [None]):
        if cur != prev + 1:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = cur
    return ", ".join(out)
