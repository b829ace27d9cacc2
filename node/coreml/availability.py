"""Whether this machine can run Core ML slices on the Neural Engine, and what the loaded slice
reported about itself, as entries of NodeInfo.backends (the proto's only list of such facts):

  "coreml-ane"                         the Neural Engine is present and coremltools can drive it
  "coreml-ane-cpu-ops:softmax=2+gather=2"  ops of the loaded slice that Core ML's compute plan puts
                                       off the Neural Engine (no commas: the Bonjour TXT value is
                                       comma-separated)

BOLTPIPE_COREML_EXECUTOR=interpreter makes a machine without Core ML run slices with the numpy
interpreter instead (slow; for tests of the pipeline on Linux): it then reports "coreml-ane" too,
with "coreml-ane-executor:interpreter" beside it so nobody mistakes it for the real thing.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

from node.coreml.settings import BACKEND_PREFIX

EXECUTOR_ENV = "BOLTPIPE_COREML_EXECUTOR"
_loaded_notes: list[str] = []


def use_interpreter() -> bool:
    return os.environ.get(EXECUTOR_ENV, "") == "interpreter"


@functools.lru_cache(maxsize=1)
def neural_engine_present() -> bool:
    """Apple silicon running macOS 15+ (Core ML states need it) with a Neural Engine device."""
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return False
    try:
        major = int(platform.mac_ver()[0].split(".")[0])
    except ValueError:
        return False
    if major < 15:
        return False
    try:
        from coremltools.models.compute_device import MLComputeDevice, MLNeuralEngineComputeDevice

        return any(isinstance(d, MLNeuralEngineComputeDevice) for d in MLComputeDevice.get_all_compute_devices())
    except Exception:  # coremltools without its native part, or an older macOS API
        return False


def unavailable_reason() -> str:
    if sys.platform != "darwin":
        return f"Core ML runs only on macOS (this is {platform.system()} {platform.machine()})"
    if platform.machine() != "arm64":
        return "the Neural Engine needs Apple silicon (this Mac is Intel)"
    return "Core ML found no Neural Engine it can use here (macOS 15 or newer and coremltools are needed)"


def backend_entries() -> list[str]:
    if use_interpreter():
        return [BACKEND_PREFIX, f"{BACKEND_PREFIX}-executor:interpreter", *_loaded_notes]
    if neural_engine_present():
        return [BACKEND_PREFIX, *_loaded_notes]
    return []


def set_loaded_notes(cpu_ops: dict[str, int] | None) -> None:
    """Facts of the slice now loaded (None when no Core ML slice is loaded)."""
    _loaded_notes.clear()
    if cpu_ops is not None:
        listed = "+".join(f"{op}={n}" for op, n in sorted(cpu_ops.items())) or "none"
        _loaded_notes.append(f"{BACKEND_PREFIX}-cpu-ops:{listed}")
