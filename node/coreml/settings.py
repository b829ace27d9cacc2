"""What a Core ML conversion is fixed to, and how the coordinator asks a worker for it.

Core ML programs have static shapes: the KV cache holds `context_length` positions for every
session, prefill runs `prefill_chunk` tokens at a time, and both are baked in at conversion.
The coordinator plans with these numbers and sends them in SliceSpec.backend as
"coreml-ane:context=2048,chunk=64" (the proto has no other place for them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BACKEND_PREFIX = "coreml-ane"   # SliceSpec.backend of a Core ML slice, and the NodeInfo.backends entry
INVENTORY_NAME = "ane"          # what the inventory calls it

# Beyond this the attention of one chunk over the fixed cache stops fitting the ANE well (each
# step reads the whole cache); the planner caps the pipeline's context here for ANE nodes.
MAX_CONTEXT = 4096
DEFAULT_PREFILL_CHUNK = 64
# Core ML refuses (or fails to load on the ANE) programs whose weights pass about 2 GB; stay under.
DEFAULT_MAX_PACKAGE_BYTES = 1_800_000_000
# Convolutions wider than this are split into several along the output channels.
DEFAULT_MAX_CONV_CHANNELS = 8192


class SettingsError(ValueError):
    """A backend string a worker cannot honour."""


@dataclass(frozen=True)
class AneSettings:
    context_length: int
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES
    max_conv_channels: int = DEFAULT_MAX_CONV_CHANNELS
    quantized: bool = True          # keep MLX's 4/8-bit weights as Core ML block-wise ints

    def __post_init__(self) -> None:
        if not 2 <= self.context_length <= 1 << 16:
            raise SettingsError(f"context length {self.context_length} is outside 2..65536")
        if not 1 <= self.prefill_chunk <= self.context_length:
            raise SettingsError(f"prefill chunk {self.prefill_chunk} must be 1..context length {self.context_length}")
        if self.max_package_bytes < 1 or self.max_conv_channels < 1:
            raise SettingsError("package and convolution limits must be positive")

    def key(self) -> dict:
        """What the converted program depends on (part of the cache key)."""
        return asdict(self)

    def to_backend(self) -> str:
        return f"{BACKEND_PREFIX}:context={self.context_length},chunk={self.prefill_chunk}"


def is_coreml_backend(backend: str) -> bool:
    return backend == BACKEND_PREFIX or backend.startswith(BACKEND_PREFIX + ":")


def parse_backend(backend: str) -> AneSettings:
    """AneSettings from "coreml-ane:context=N,chunk=M" (the form AneSettings.to_backend writes)."""
    if not is_coreml_backend(backend):
        raise SettingsError(f"backend {backend!r} is not a Core ML backend ({BACKEND_PREFIX}:context=N,chunk=M)")
    _, _, options = backend.partition(":")
    values: dict[str, int] = {}
    for part in filter(None, options.split(",")):
        name, sep, value = part.partition("=")
        if not sep or name not in ("context", "chunk") or not value.isdigit():
            raise SettingsError(f"backend {backend!r}: expected context=N,chunk=M, got {part!r}")
        values[name] = int(value)
    if "context" not in values:
        raise SettingsError(f"backend {backend!r} does not say the context length (context=N)")
    return AneSettings(context_length=values["context"], prefill_chunk=values.get("chunk", DEFAULT_PREFILL_CHUNK))
