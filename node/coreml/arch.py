"""The numbers of a decoder layer the Core ML program needs, read from config.json, and the
rotary tables. Only what the builder implements is accepted; the rest is refused with a reason."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SUPPORTED = ("llama", "mistral", "qwen2")


class ArchError(ValueError):
    """A model the Core ML builder cannot express."""


@dataclass(frozen=True)
class Arch:
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    rope_theta: float
    rope_traditional: bool
    rope_scaling: dict | None
    max_positions: int | None

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads

    def kv_bytes_per_position(self) -> int:
        """fp16 keys and values of one layer at one position."""
        return 2 * self.kv_heads * self.head_dim * 2


def read_arch(config: dict) -> Arch:
    kind = config.get("model_type")
    if kind not in SUPPORTED:
        raise ArchError(f"model_type {kind!r} has no Core ML builder; supported: {', '.join(SUPPORTED)}")
    if config.get("sliding_window") and config.get("use_sliding_window", kind != "qwen2"):
        raise ArchError("sliding-window attention is not built for Core ML; use backend: gpu for this model")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    if heads % kv_heads:
        raise ArchError(f"{heads} attention heads do not divide into {kv_heads} KV heads")
    if head_dim % 2:
        raise ArchError(f"head dimension {head_dim} is odd; rotary embeddings need pairs")
    scaling = config.get("rope_scaling")
    if scaling is not None and (scaling.get("type") or scaling.get("rope_type")) not in ("default", "linear", "llama3"):
        raise ArchError(f"RoPE scaling {scaling!r} is not built for Core ML (default, linear and llama3 are)")
    return Arch(
        hidden=hidden,
        intermediate=int(config["intermediate_size"]),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=float(config.get("rope_theta", 10000.0)),
        rope_traditional=bool(config.get("rope_traditional", False)),
        rope_scaling=scaling,
        max_positions=config.get("max_position_embeddings"),
    )


def _periods(arch: Arch) -> np.ndarray:
    """Per rotated pair, the positions per radian (mlx-lm's `freqs`): angle = position / period."""
    dims = arch.head_dim
    periods = arch.rope_theta ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    scaling = arch.rope_scaling or {}
    kind = scaling.get("type") or scaling.get("rope_type") or "default"
    if kind == "linear":
        periods = periods * float(scaling["factor"])
    elif kind == "llama3":
        # The same smoothing as mlx-lm's Llama3RoPE.
        factor = float(scaling["factor"])
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        old = float(scaling.get("original_max_position_embeddings", 8192))
        wavelens = 2 * math.pi * periods
        scaled = np.where(wavelens > old / low, periods * factor, periods)
        medium = (wavelens > old / high) & (wavelens < old / low)
        smooth = (old / wavelens - low) / (high - low)
        periods = np.where(medium, scaled / ((1 - smooth) / factor + smooth), scaled)
    return periods


def rope_tables(arch: Arch, context: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin per (position, dimension) in the half-split layout (x[:d/2] pairs with x[d/2:]),
    shape (context, head_dim), fp16."""
    angles = np.arange(context, dtype=np.float64)[:, None] / _periods(arch)[None, :]
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles).astype(np.float16), np.sin(angles).astype(np.float16)
