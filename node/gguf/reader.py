"""Parse a GGUF file's header, metadata and tensor table (no tensor data is read here).

Written from the GGUF format description: little-endian header "GGUF", version, tensor count,
metadata count; then typed key/value pairs; then one info record per tensor (name, dims, ggml type,
offset); then the tensor data, aligned to `general.alignment` (32 unless stated).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import GGUFImportError
from .types import GGMLType, ggml_type_name

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 used 32-bit counts and is long obsolete
DEFAULT_ALIGNMENT = 32

# Metadata value type ids -> struct format (scalars only; 8 = string, 9 = array).
_SCALAR_FORMATS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i",
    6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: shape[0] is the fastest-varying (row length)
    ggml_type: int
    offset: int  # absolute file offset of the first byte
    nbytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]  # in file order
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")


class _Cursor:
    """Sequential little-endian reads that turn a short read into a 'truncated' error."""

    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        self.fh, self.path, self.size = fh, path, size

    def read(self, n: int, what: str) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise GGUFImportError(
                f"{self.path.name} is truncated: the file ended ({self.size} bytes) while reading {what}. "
                "The download or copy was probably interrupted; fetch the file again."
            )
        return data

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        if n > self.size:  # a garbage length: do not try to allocate it
            raise GGUFImportError(
                f"{self.path.name} is damaged or truncated: {what} claims {n} bytes in a {self.size}-byte file."
            )
        return self.read(n, what).decode("utf-8", errors="replace")

    def tell(self) -> int:
        return self.fh.tell()


def _read_value(cur: _Cursor, vtype: int, key: str) -> Any:
    if vtype in _SCALAR_FORMATS:
        return cur.unpack(_SCALAR_FORMATS[vtype], f"metadata value {key!r}")
    if vtype == _STRING:
        return cur.string(f"metadata value {key!r}")
    if vtype == _ARRAY:
        etype = cur.unpack("<I", f"metadata array type {key!r}")
        count = cur.unpack("<Q", f"metadata array length {key!r}")
        if etype in _SCALAR_FORMATS:
            fmt = _SCALAR_FORMATS[etype]
            size = struct.calcsize(fmt)
            raw = cur.read(size * count, f"metadata array {key!r}")
            return list(struct.unpack(f"<{count}{fmt[1]}", raw))
        return [_read_value(cur, etype, key) for _ in range(count)]
    raise GGUFImportError(
        f"metadata key {key!r} has unknown value type {vtype}; the file is damaged or from a newer "
        "GGUF revision than this importer understands."
    )


def _tensor_nbytes(name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    layout = GGMLType.layout(ggml_type)
    if layout is None:
        return -1  # unknown type: the caller reports it by name, size does not matter then
    block_elems, block_bytes = layout
    n = 1
    for d in shape:
        n *= d
    if shape and shape[0] % block_elems:
        raise GGUFImportError(
            f"tensor {name!r} ({ggml_type_name(ggml_type)}) has a row length {shape[0]} that is not a "
            f"multiple of the block size {block_elems}; the file is damaged."
        )
    return n // block_elems * block_bytes


def read_gguf(path: Path) -> GGUFFile:
    """Read the header, metadata and tensor table; check that the data section is complete."""
    path = Path(path)
    if not path.is_file():
        raise GGUFImportError(f"GGUF file {path} does not exist (or is not a regular file); check the path.")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        cur = _Cursor(fh, path, size)
        magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise GGUFImportError(
                f"{path.name} is not a GGUF file: expected the magic bytes b'GGUF' at offset 0, found "
                f"{magic!r}. Pass a .gguf model file (as made by llama.cpp or pulled by Ollama)."
            )
        version = cur.unpack("<I", "the version")
        if version not in SUPPORTED_VERSIONS:
            hint = " (it looks byte-swapped: big-endian GGUF files are not supported)" if version > 0xFFFF else ""
            raise GGUFImportError(
                f"{path.name} has GGUF version {version}{hint}; supported versions: "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}. Re-export it with a current llama.cpp."
            )
        n_tensors = cur.unpack("<Q", "the tensor count")
        n_kv = cur.unpack("<Q", "the metadata count")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string("a metadata key")
            vtype = cur.unpack("<I", f"the type of metadata key {key!r}")
            metadata[key] = _read_value(cur, vtype, key)
        raw_infos = []
        for _ in range(n_tensors):
            name = cur.string("a tensor name")
            n_dims = cur.unpack("<I", f"the rank of tensor {name!r}")
            if n_dims > 8:
                raise GGUFImportError(f"tensor {name!r} claims {n_dims} dimensions; the file is damaged.")
            shape = tuple(cur.unpack("<Q", f"the shape of tensor {name!r}") for _ in range(n_dims))
            ggml_type = cur.unpack("<I", f"the type of tensor {name!r}")
            rel = cur.unpack("<Q", f"the offset of tensor {name!r}")
            raw_infos.append((name, shape, ggml_type, rel))
        align = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
        data_offset = (cur.tell() + align - 1) // align * align

    tensors: dict[str, TensorInfo] = {}
    for name, shape, ggml_type, rel in raw_infos:
        nbytes = _tensor_nbytes(name, shape, ggml_type)
        info = TensorInfo(name, shape, ggml_type, data_offset + rel, nbytes)
        if nbytes >= 0 and info.offset + nbytes > size:
            raise GGUFImportError(
                f"{path.name} is truncated: tensor {name!r} needs bytes {info.offset}..{info.offset + nbytes} "
                f"but the file has only {size} bytes. Fetch the file again."
            )
        tensors[name] = info
    return GGUFFile(path, version, metadata, tensors, data_offset, size)
