"""Both sides of `cluster bench` on the same BLAS, and what each side reports it used.

The cluster's workers choose their BLAS themselves (node/blas_preload.py: on Linux the system
OpenBLAS, preloaded); the one-process baseline is started with the same library preloaded. Every
process gets one OpenBLAS thread (unless OPENBLAS_NUM_THREADS says otherwise), so a stage and the
baseline each compute on one core, pinned or not."""

from __future__ import annotations

import os
from typing import Mapping

from node.blas_preload import THREADS_ENV, blas_choice, with_preload


def one_thread_each(env: dict[str, str] | None = None) -> None:
    """One OpenBLAS thread in every process this one starts (workers included), unless set already."""
    (os.environ if env is None else env).setdefault(THREADS_ENV, "1")


def baseline_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the baseline process: the BLAS a worker started here would preload, one thread."""
    out = dict(os.environ if env is None else env)
    choice = blas_choice(out)
    if choice.error:
        raise SystemExit(f"error: {choice.error}")
    if choice.library is not None:
        out = with_preload(choice.library, out)
    one_thread_each(out)
    return out


def cluster_blas(stages: list[str], infos: list) -> dict[str, str]:
    """node -> the BLAS its worker reported (NodeInfo.blas) when it loaded its slice."""
    return {name: (getattr(info, "blas", "") or "not reported") for name, info in zip(stages, infos)}


def blas_summary(report_blas: dict) -> str:
    """One line: which BLAS each side used."""
    nodes = report_blas.get("cluster", {})
    libraries = set(nodes.values())
    cluster = (next(iter(libraries)) if len(libraries) == 1
               else ", ".join(f"{n}: {b}" for n, b in nodes.items()))
    return f"BLAS: cluster {cluster}; one process {report_blas.get('single_process', '?')}"
