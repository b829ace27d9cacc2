"""Facts about this machine and this process that a worker reports."""

from __future__ import annotations

import os
import platform
import resource
import sys


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def platform_name() -> str:
    if sys.platform == "darwin":
        return f"macOS-{platform.mac_ver()[0]}-{platform.machine()}"
    return f"{platform.system()}-{platform.machine()}"


def mlx_backends() -> list[str]:
    import mlx.core as mx

    backends = []
    if sys.platform == "darwin" and mx.metal.is_available():
        backends.append("mlx-gpu")
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        backends.append("mlx-cuda")
    backends.append("mlx-cpu")
    return backends
