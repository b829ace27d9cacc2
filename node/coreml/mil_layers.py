"""The MIL pieces of one Llama-style decoder layer, laid out for the Neural Engine.

Activations are channels-first (1, C, 1, S) fp16 and every projection is a 1x1 convolution (the
ANE's native layout and op); attention works on (1, kv_heads, group * S, head_dim) so grouped
queries share their KV head without a copy. Each KV state is read once, written once with the
new positions, and the value the write returns feeds attention: a second read_state of the same
state could be merged with the first by the converter's passes and lose the write.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from node.coreml.arch import Arch
from node.coreml.weights import LayerWeights, LinearWeight

NEG = np.float16(-30000.0)   # an attention score no query may see (finite: no overflow when added)
MIN_SCALE = np.float16(1e-2)                  # floor of the RMSNorm pre-scale (see rms_norm)

_INT4 = {4: (types.np_uint4_dtype, 2), 8: (np.uint8, 1)}


@dataclass
class Shared:
    """Per-call values every layer uses: rotary tables at this chunk's positions, the causal mask,
    and the begin / end indices of the cache rows the chunk writes."""
    cos: object      # (S, head_dim)
    sin: object
    mask: object     # (group * S, context): 0 where a query may look, NEG where it may not
    begin: object    # (4,) int32: [0, 0, position, 0]
    end: object      # (4,) int32: [1, kv_heads, position + S, head_dim]


def weight_var(w: LinearWeight, name: str, rows: slice | None = None):
    """The (out, in, 1, 1) conv weight: a const, or block-wise ints dequantized by Core ML."""
    rows = rows or slice(0, w.out_features)
    if w.dense is not None:
        return mb.const(val=w.dense[rows][:, :, None, None], name=name)
    dtype, _ = _INT4[w.bits]
    return mb.constexpr_blockwise_shift_scale(
        data=w.q[rows][:, :, None, None].astype(dtype),
        scale=w.scale[rows][:, :, None, None],
        offset=w.offset[rows][:, :, None, None],
        name=name,
    )


def linear(x, w: LinearWeight, name: str, max_channels: int):
    """x (1, in, 1, S) -> (1, out, 1, S). Very wide projections are split along the outputs into
    convolutions of at most max_channels (the ANE tiles those better) and concatenated."""
    pieces = []
    for i, lo in enumerate(range(0, w.out_features, max_channels)):
        rows = slice(lo, min(lo + max_channels, w.out_features))
        bias = None if w.bias is None else w.bias[rows]
        suffix = "" if w.out_features <= max_channels else f"_part{i}"
        pieces.append(mb.conv(x=x, weight=weight_var(w, f"{name}_w{suffix}", rows), bias=bias,
                              name=f"{name}{suffix}"))
    return pieces[0] if len(pieces) == 1 else mb.concat(values=pieces, axis=1, name=name)


def rms_norm(x, weight: np.ndarray, eps: float, name: str):
    """RMSNorm over channels in fp16. Hidden states of real models pass 20 000, whose square is
    beyond fp16: x is first divided by its largest magnitude (floored at MIN_SCALE), which leaves
    x / sqrt(mean(x^2) + eps) unchanged when eps is divided by the same square."""
    peak = mb.maximum(x=mb.reduce_max(x=mb.abs(x=x), axes=[1], keep_dims=True), y=MIN_SCALE)
    inv = mb.real_div(x=np.float16(1.0), y=peak)
    xs = mb.mul(x=x, y=inv)
    mean_sq = mb.reduce_mean(x=mb.mul(x=xs, y=xs), axes=[1], keep_dims=True)
    eps_s = mb.mul(x=mb.mul(x=inv, y=inv), y=np.float16(eps))
    r = mb.rsqrt(x=mb.add(x=mean_sq, y=eps_s))
    return mb.mul(x=mb.mul(x=xs, y=r), y=weight.astype(np.float16)[None, :, None, None], name=name)


def _heads_last(x, heads: int, head_dim: int, seq: int):
    """(1, heads * head_dim, 1, S) -> (heads, S, head_dim)."""
    x = mb.reshape(x=x, shape=[heads, head_dim, seq])
    return mb.transpose(x=x, perm=[0, 2, 1])


def _rope(x, shared: Shared, head_dim: int):
    """Half-split rotation on the last axis: x * cos + rotate_half(x) * sin."""
    half = head_dim // 2
    first = mb.slice_by_index(x=x, begin=[0, 0, 0], end=[0, 0, half], end_mask=[True, True, False])
    second = mb.slice_by_index(x=x, begin=[0, 0, half], end=[0, 0, head_dim], end_mask=[True, True, True])
    rotated = mb.concat(values=[mb.mul(x=second, y=np.float16(-1.0)), first], axis=2)
    return mb.add(x=mb.mul(x=x, y=shared.cos), y=mb.mul(x=rotated, y=shared.sin))


def _cache_write(state, new, shared: Shared, name: str):
    """One read, one slice_update at this chunk's positions, one write; the written value is returned."""
    current = mb.read_state(input=state, name=f"{name}_read")
    updated = mb.slice_update(x=current, update=new, begin=shared.begin, end=shared.end, name=f"{name}_update")
    return mb.coreml_update_state(state=state, value=updated, name=f"{name}_write")


def attention(x, layer: LayerWeights, arch: Arch, seq: int, shared: Shared, k_state, v_state, max_channels: int):
    n, hd, kvh, g = arch.heads, arch.head_dim, arch.kv_heads, arch.group
    p = f"l{layer.index}_attn"
    q = linear(x, layer.linear["self_attn.q_proj"], f"{p}_q", max_channels)
    k = linear(x, layer.linear["self_attn.k_proj"], f"{p}_k", max_channels)
    v = linear(x, layer.linear["self_attn.v_proj"], f"{p}_v", max_channels)
    q = _rope(_heads_last(q, n, hd, seq), shared, hd)                      # (n, S, hd)
    q = mb.mul(x=q, y=np.float16(hd ** -0.5))
    q = mb.reshape(x=q, shape=[1, kvh, g * seq, hd])                        # query head h = kvh * g + j
    k = mb.expand_dims(x=_rope(_heads_last(k, kvh, hd, seq), shared, hd), axes=[0])   # (1, kvh, S, hd)
    v = mb.expand_dims(x=_heads_last(v, kvh, hd, seq), axes=[0])
    keys = _cache_write(k_state, k, shared, f"{p}_kcache")                  # (1, kvh, context, hd)
    values = _cache_write(v_state, v, shared, f"{p}_vcache")
    scores = mb.add(x=mb.matmul(x=q, y=keys, transpose_y=True), y=shared.mask)
    probs = mb.softmax(x=scores, axis=-1)
    out = mb.matmul(x=probs, y=values)                                      # (1, kvh, g * S, hd)
    out = mb.transpose(x=mb.reshape(x=out, shape=[n, seq, hd]), perm=[0, 2, 1])
    out = mb.reshape(x=out, shape=[1, n * hd, 1, seq])
    return linear(out, layer.linear["self_attn.o_proj"], f"{p}_o", max_channels)


def mlp(x, layer: LayerWeights, max_channels: int):
    p = f"l{layer.index}_mlp"
    gate = linear(x, layer.linear["mlp.gate_proj"], f"{p}_gate", max_channels)
    up = linear(x, layer.linear["mlp.up_proj"], f"{p}_up", max_channels)
    return linear(mb.mul(x=mb.silu(x=gate), y=up), layer.linear["mlp.down_proj"], f"{p}_down", max_channels)


def decoder_layer(x, layer: LayerWeights, arch: Arch, seq: int, shared: Shared, k_state, v_state, max_channels: int):
    h = mb.add(x=x, y=attention(rms_norm(x, layer.norms["input_layernorm"], arch.eps, f"l{layer.index}_norm1"),
                                layer, arch, seq, shared, k_state, v_state, max_channels))
    return mb.add(x=h, y=mlp(rms_norm(h, layer.norms["post_attention_layernorm"], arch.eps, f"l{layer.index}_norm2"),
                             layer, max_channels), name=f"l{layer.index}_out")
