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


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this program. On Linux VmHWM, because ru_maxrss
    survives exec and so reports the peak of whatever process forked us."""
    hwm = _proc_status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux kilobytes


def rss_bytes() -> int:
    rss = _proc_status_kb("VmRSS")
    return rss * 1024 if rss is not None else 0


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
