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
    """The compute backends this worker offers, best first: MLX's, then Core ML's when the Neural
    Engine is usable (node/coreml/availability.py; its entries also carry facts of a loaded Core ML
    slice). The name predates Core ML; callers use it for every backend."""
    import mlx.core as mx

    from node.coreml.availability import backend_entries

    backends = []
    if sys.platform == "darwin" and mx.metal.is_available():
        backends.append("mlx-gpu")
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        backends.append("mlx-cuda")
    backends.append("mlx-cpu")
    return backends + backend_entries()


def _meminfo_bytes(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def usable_memory_bytes() -> int:
    """Memory this node can give to weights and KV caches: on macOS the Metal working set
    the GPU may wire (not all of RAM), with CUDA the device's memory, else available RAM."""
    import mlx.core as mx

    if sys.platform == "darwin" and mx.metal.is_available():
        info = mx.metal.device_info()
        return int(info.get("max_recommended_working_set_size") or info.get("memory_size") or 0)
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        info = mx.device_info() if hasattr(mx, "device_info") else {}
        if info.get("memory_size"):
            return int(info["memory_size"])
    available = _meminfo_bytes("MemAvailable")
    return available if available is not None else total_memory_bytes()


def _run(cmd: list[str]) -> str:
    import subprocess

    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_model() -> str:
    """The chip or CPU: "Apple M4", "AMD EPYC 7B13"."""
    if sys.platform == "darwin":
        return _run(["sysctl", "-n", "machdep.cpu.brand_string"]) or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_id() -> str:
    """The same for every worker on one machine (and network namespace: workers in
    separate namespaces are treated as separate machines, as they are in the lab tests),
    so the planner can share one machine's memory among its workers."""
    base = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            base = open(path).read().strip()
            break
        except OSError:
            continue
    if sys.platform == "darwin":
        base = _run(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]).split("IOPlatformUUID", 1)[-1][:60]
    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = ""
    import hashlib

    return hashlib.sha256(f"{base}|{platform.node()}|{netns}".encode()).hexdigest()[:16]
