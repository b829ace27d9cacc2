"""Which BLAS library answers MLX's CPU matrix products in this process.

MLX's Linux CPU build carries a slow BLAS of its own, loaded privately; a system OpenBLAS
preloaded into the process (LD_PRELOAD) answers the global `cblas_sgemm` lookup instead."""

from __future__ import annotations

import ctypes
from pathlib import Path

BUNDLED = "MLX's bundled BLAS"


def library_at(address: int, maps: str) -> str | None:
    """The file mapped at `address`, from the text of /proc/<pid>/maps."""
    for line in maps.splitlines():
        fields = line.split()
        low, _, high = fields[0].partition("-")
        if int(low, 16) <= address < int(high, 16):
            return fields[5] if len(fields) > 5 else "(anonymous)"
    return None


def blas_in_use() -> str:
    """The library that the process's global symbol lookup gives for cblas_sgemm (an LD_PRELOAD'ed
    OpenBLAS), else MLX's own bundled copy."""
    try:
        address = ctypes.cast(ctypes.CDLL(None).cblas_sgemm, ctypes.c_void_p).value
    except AttributeError:
        return BUNDLED
    try:
        return library_at(address, Path("/proc/self/maps").read_text()) or "unknown"
    except OSError:
        return "a global cblas_sgemm (no /proc/self/maps to name it)"
