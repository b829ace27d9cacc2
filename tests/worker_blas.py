"""The test process computes with the BLAS a worker on this machine uses (node/blas_preload.py), so
that what mlx-lm gives here (tests/reference.py, tests/stage_chain.py) is computed as the workers
compute it. On Linux a worker preloads the system OpenBLAS; float32 products (the demo model's
attention, the tiny models' every layer) then round differently from MLX's bundled BLAS (about 1e-4
in the demo model's logits): greedy tokens would agree only as long as no two candidates came that
close. Loaded with RTLD_GLOBAL before MLX is imported, the library answers MLX's `cblas_sgemm` here
just as a preloaded one does in a worker (no re-exec of pytest needed)."""

from __future__ import annotations

import ctypes
import os
import sys

from node.blas_preload import THREADS_ENV, blas_choice


def use_worker_blas() -> str | None:
    """Loads the workers' BLAS into this process; returns it (None: workers use MLX's own too)."""
    choice = blas_choice()
    if choice.library is None or choice.error:
        return None
    if "mlx.core" in sys.modules:
        raise RuntimeError(f"MLX was imported before {choice.library} could be loaded for it: load it first")
    threads = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = "1"  # this process's own pool only (OpenBLAS reads it once, when loaded)
    try:
        ctypes.CDLL(choice.library, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    finally:
        if threads is None:
            os.environ.pop(THREADS_ENV)
        else:
            os.environ[THREADS_ENV] = threads
    return choice.library
