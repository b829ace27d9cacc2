"""Per-node weight shards cut from an mlx-lm model directory.

A worker holding layers [a, b) needs only their tensors (plus the embedding, final norm and head when
its place in the ring asks for them), so each machine gets a shard instead of the whole model. A shard
is itself a model directory the worker loads (node/stage_model.load_stage): the full model's
config.json (num_hidden_layers stays the model's), one model.safetensors holding this stage's tensors,
and boltpipe-shard.json naming its layer range and every file's sha256 and size, so a copy can be
checked on any machine.

Tensor bytes are copied from the source files at the offsets their headers give, a chunk at a time:
no tensor library, and never more than one chunk in memory. The same source always gives the same
bytes (sorted tensors, fixed JSON), so a shard's hash identifies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from deploy.stage_tensors import INDEX_FILE, SMALL_FILES, TOKENIZER_FILES, WEIGHTS_FILE, files_for_stage, has_head, stage_tensor_names
from node.model_config import SHARD_MANIFEST, read_model_info
from node.tensor_names import EMBEDDING, HEAD, LAYER, NORM, extra_layer_count, tensor_role
from node.model_sizes import ModelSizeError, SafetensorsHeader, TensorEntry, read_safetensors_header

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)

CHUNK_BYTES = 8 << 20


class ShardError(ValueError):
    """A shard that cannot be cut or trusted; the message says why and what to do."""


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size: int


@dataclass(frozen=True)
class ShardManifest:
    layer_start: int
    layer_end: int
    num_layers: int
    files: dict[str, FileDigest]  # relative name -> digest; every file of the shard but the manifest

    def to_dict(self) -> dict:
        """The manifest file's JSON shape."""
        return {
            "layer_start": self.layer_start,
            "layer_end": self.layer_end,
            "num_layers": self.num_layers,
            "files": {name: {"sha256": d.sha256, "size": d.size} for name, d in sorted(self.files.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def total_bytes(self) -> int:
        return sum(d.size for d in self.files.values())

    @property
    def content_id(self) -> str:
        """A name for the shard's content (its range and files' hashes): new content never overwrites old."""
        digest = hashlib.sha256()
        for name, d in sorted(self.files.items()):
            digest.update(f"{name}:{d.sha256}\n".encode())
        return f"{self.layer_start}-{self.layer_end}-{digest.hexdigest()[:16]}"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(shard_dir: str | Path) -> ShardManifest:
    path = Path(shard_dir).expanduser() / SHARD_MANIFEST
    try:
        data = json.loads(path.read_text())
        files = {str(name): FileDigest(sha256=str(d["sha256"]), size=int(d["size"]))
                 for name, d in data["files"].items()}
        manifest = ShardManifest(layer_start=data["layer_start"], layer_end=data["layer_end"],
                                 num_layers=data["num_layers"], files=files)
    except FileNotFoundError as exc:
        raise ShardError(f"{path.parent} is not a shard: {SHARD_MANIFEST} is missing") from exc
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ShardError(f"{path} is not a valid shard manifest ({exc!r}); cut the shard again") from exc
    ints = (manifest.layer_start, manifest.layer_end, manifest.num_layers)
    if not all(type(v) is int for v in ints) or not 0 <= ints[0] < ints[1] <= ints[2]:
        raise ShardError(f"{path}: layer range [{manifest.layer_start}, {manifest.layer_end}) of "
                         f"{manifest.num_layers} layers is invalid; cut the shard again")
    return manifest


def verify_shard(shard_dir: str | Path, *, hashes: bool = False) -> list[str]:
    """What is wrong with a shard directory (empty when nothing): every file the manifest lists must
    be there with its size, and with `hashes` also its sha256 (which reads every byte)."""
    shard_dir = Path(shard_dir).expanduser()
    try:
        manifest = read_manifest(shard_dir)
    except ShardError as exc:
        return [str(exc)]
    problems = []
    for name, expected in sorted(manifest.files.items()):
        path = shard_dir / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif (size := path.stat().st_size) != expected.size:
            problems.append(f"{name} has {size} bytes, the manifest says {expected.size}")
        elif hashes and (digest := file_sha256(path)) != expected.sha256:
            problems.append(f"{name} has sha256 {digest}, the manifest says {expected.sha256}")
    return problems


def model_key(model_dir: str | Path) -> str:
    """A short name for a model directory's contents: its config and its weight files' names, sizes
    and modification times. Cheap (no weight is read) and changes whenever the weights are replaced."""
    model_dir = Path(model_dir).expanduser()
    parts: list = [(model_dir / "config.json").read_bytes().decode("utf-8", "replace")]
    candidates = sorted(model_dir.glob("model*.safetensors")) + [model_dir / INDEX_FILE]
    for path in candidates:
        if path.is_file():
            st = path.stat()
            parts.append([path.name, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def boltpipe_home() -> Path:
    return Path(os.environ.get("BOLTPIPE_HOME") or "~/.boltpipe").expanduser()


def shard_cache_dir(model_dir: str | Path, layer_start: int, layer_end: int) -> Path:
    return boltpipe_home() / "shards" / model_key(model_dir) / f"{layer_start}-{layer_end}"


def ensure_shard(model_dir: str | Path, layer_start: int, layer_end: int,
                 progress: ProgressFn | None = None) -> Path:
    """The cached shard for this model and range, cut first when it is missing or incomplete.
    Only sizes are checked here (hashing would read the whole shard on every start)."""
    out = shard_cache_dir(model_dir, layer_start, layer_end)
    if (out / SHARD_MANIFEST).is_file() and not verify_shard(out):
        manifest = read_manifest(out)
        if (manifest.layer_start, manifest.layer_end) == (layer_start, layer_end):
            return out
    cut_shard(model_dir, layer_start, layer_end, out, progress)
    return out


def cut_shard(model_dir: str | Path, layer_start: int, layer_end: int, out_dir: str | Path,
              progress: ProgressFn | None = None) -> ShardManifest:
    """Write the shard for layers [layer_start, layer_end) of `model_dir` to `out_dir`.

    The shard is built in a temporary sibling directory and renamed into place only when complete,
    so `out_dir` is either absent, the previous shard, or the new one; never half written. An
    existing `out_dir` is replaced only if it is a shard (has a manifest) or empty.
    """
    model_dir, out_dir = Path(model_dir).expanduser(), Path(out_dir).expanduser()
    info = read_model_info(model_dir)
    if not 0 <= layer_start < layer_end <= info.num_layers:
        raise ShardError(f"layer range [{layer_start}, {layer_end}) is not within {model_dir}'s "
                         f"{info.num_layers} layers")
    if out_dir.resolve() == model_dir.resolve():
        raise ShardError(f"the shard's directory must differ from the model's ({model_dir}); choose another one")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / SHARD_MANIFEST).is_file():
        raise ShardError(f"{out_dir} exists and is not a shard; choose a new or empty directory")
    plan = _stage_tensors(model_dir, layer_start, layer_end, info.num_layers, extra_layer_count(info.text_config))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        files = {WEIGHTS_FILE: _write_weights(tmp / WEIGHTS_FILE, plan, progress or (lambda *_: None))}
        last = layer_end == info.num_layers
        for name in SMALL_FILES + (TOKENIZER_FILES if last else ()):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)
                files[name] = FileDigest(sha256=file_sha256(tmp / name), size=(tmp / name).stat().st_size)
        manifest = ShardManifest(layer_start=layer_start, layer_end=layer_end, num_layers=info.num_layers,
                                 files=files)
        _write_synced(tmp / SHARD_MANIFEST, manifest.to_json().encode())
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


@dataclass(frozen=True)
class _Source:
    path: Path
    header: SafetensorsHeader

    def entry(self, name: str) -> TensorEntry:
        return self.header.tensors[name]


def _stage_tensors(model_dir: Path, start: int, end: int, num_layers: int,
                   extra_layers: int) -> dict[str, _Source]:
    """Tensor name -> the source file holding it, for the stage's tensors, checked to be complete.

    With an index only the files holding the stage's tensors are read, so a directory holding just
    those files (a partial download, deploy/hf_fetch.py) is enough."""
    index_path = model_dir / INDEX_FILE
    expected: list[str] | None = None
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            weight_map = index["weight_map"]
            tied = not has_head(weight_map)
            expected = stage_tensor_names(weight_map, start, end, num_layers, tied, extra_layers)
            names = files_for_stage(index, start, end, num_layers, extra_layers)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ShardError(f"{index_path} is not a valid safetensors index (needs a weight_map): {exc!r}") from exc
        paths = [model_dir / name for name in names]
        if missing := [p.name for p in paths if not p.is_file()]:
            raise ShardError(f"{index_path.name} places layers [{start}, {end})'s tensors in files missing from "
                             f"{model_dir}: {', '.join(missing)}; download them or the whole model")
    else:
        paths = sorted(model_dir.glob("model*.safetensors"))
    holder: dict[str, _Source] = {}
    for path in paths:
        try:
            source = _Source(path, read_safetensors_header(path))
        except ModelSizeError as exc:
            raise ShardError(f"{model_dir}: {exc}") from exc
        for name in source.header.tensors:
            if name in holder:
                raise ShardError(f"tensor {name!r} appears in both {holder[name].path.name} and {path.name}")
            holder[name] = source
    if expected is None:
        tied = not has_head(holder)
    try:
        chosen = stage_tensor_names(holder, start, end, num_layers, tied, extra_layers)
    except ValueError as exc:
        raise ShardError(f"{model_dir}: {exc}") from exc
    _check_complete(model_dir, chosen, expected, start, end, num_layers, tied)
    return {name: holder[name] for name in chosen}


def _check_complete(model_dir: Path, chosen: list[str], expected: list[str] | None, start: int, end: int,
                    num_layers: int, tied: bool) -> None:
    """Refuse to cut a shard that would lack what its stage needs, rather than let a worker find out."""
    roles = [tensor_role(n, num_layers) for n in chosen]
    parts = {r.part for r in roles}
    layers = {r.layer for r in roles if r.part == LAYER}
    lacking = [f"layer {i}" for i in range(start, end) if i not in layers]
    if (start == 0 or (end == num_layers and tied)) and EMBEDDING not in parts:
        lacking.append("the token embedding (embed_tokens)")
    if end == num_layers and NORM not in parts:
        lacking.append("the final norm")
    if end == num_layers and not tied and HEAD not in parts:
        lacking.append("the output head (lm_head)")
    if expected is not None:
        have = set(chosen)
        lacking += [f"{n} (named by the index)" for n in expected if n not in have]
    if lacking:
        shown = ", ".join(lacking[:6]) + (f" and {len(lacking) - 6} more" if len(lacking) > 6 else "")
        raise ShardError(f"{model_dir} lacks tensors that layers [{start}, {end}) of {num_layers} need: {shown}; "
                         "is a weight file missing, or is this directory itself a shard of other layers?")


def _header_bytes(plan: dict[str, _Source]) -> bytes:
    """The shard's safetensors header: the sources' metadata (the first file in name order wins a
    key both set), then tensors in name order laid end to end. Padded with spaces to 8 bytes so the
    data is aligned, as the safetensors writers do."""
    metadata: dict[str, str] = {}
    for source in sorted({s.path: s for s in plan.values()}.values(), key=lambda s: s.path.name):
        for key, value in source.header.metadata.items():
            metadata.setdefault(key, value)
    header: dict = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    offset = 0
    for name in sorted(plan):
        entry = plan[name].entry(name)
        header[name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                        "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    return blob + b" " * (-len(blob) % 8)


def _write_weights(path: Path, plan: dict[str, _Source], progress: ProgressFn) -> FileDigest:
    """Write the shard's weight file, hashing as it goes so the bytes are read only once."""
    blob = _header_bytes(plan)
    total = sum(plan[name].entry(name).nbytes for name in plan)
    digest, done = hashlib.sha256(), 0
    progress(0, total)
    with open(path, "wb") as out, ExitStack() as stack:
        handles: dict[Path, BinaryIO] = {}

        def emit(data: bytes) -> None:
            out.write(data)
            digest.update(data)

        emit(struct.pack("<Q", len(blob)) + blob)
        for name in sorted(plan):
            source, entry = plan[name], plan[name].entry(name)
            if source.path not in handles:
                handles[source.path] = stack.enter_context(open(source.path, "rb"))
            fh = handles[source.path]
            fh.seek(source.header.data_start + entry.begin)
            remaining = entry.nbytes
            while remaining:
                chunk = fh.read(min(CHUNK_BYTES, remaining))
                if not chunk:
                    raise ShardError(f"{source.path} ended inside tensor {name!r}: the file was truncated or "
                                     "replaced while the shard was cut; cut it again")
                emit(chunk)
                remaining -= len(chunk)
                done += len(chunk)
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())
        size = out.tell()
    return FileDigest(sha256=digest.hexdigest(), size=size)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _install(tmp: Path, out_dir: Path) -> None:
    """Rename the finished shard into place; a previous shard there is moved aside first and then
    removed, so at every instant out_dir is absent or a complete shard."""
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if not out_dir.exists():
            raise
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rename(out_dir, old / "shard")
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    fd = os.open(out_dir.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
