"""Write a safetensors file whose layout is fixed up front and whose tensors are filled piecewise.

Knowing every tensor's dtype and shape before any data exists lets the importer stream: it writes the
header, then fills each tensor a block of rows at a time, so memory holds one chunk, not a model.
Format: u64 little-endian header length, JSON header (name -> dtype, shape, byte range), raw data.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "U8": 1}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPE_SIZES[self.dtype]
        for d in self.shape:
            n *= d
        return n


class SafetensorsWriter:
    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self._fh: BinaryIO = open(path, "wb")
        header: dict[str, object] = {"__metadata__": metadata or {"format": "mlx"}}
        self._start: dict[str, int] = {}
        offset = 0
        for spec in specs:
            header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape),
                                 "data_offsets": [offset, offset + spec.nbytes]}
            self._start[spec.name] = offset
            offset += spec.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # keeps the data 8-byte aligned, as readers prefer
        self._fh.write(struct.pack("<Q", len(blob)) + blob)
        self._data_start = 8 + len(blob)
        self.total_bytes = self._data_start + offset
        self._fh.truncate(self.total_bytes)

    def write(self, name: str, byte_offset: int, data: np.ndarray) -> int:
        """Write `data` (C-contiguous, little-endian) at `byte_offset` inside tensor `name`."""
        self._fh.seek(self._data_start + self._start[name] + byte_offset)
        buf = np.ascontiguousarray(data).data
        self._fh.write(buf)
        return buf.nbytes

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
