"""One function of a slice as a MIL program: `seq` tokens through layers [start, end).

Interface of every function (decode has seq = 1, prefill seq = the chunk):
  inputs  hidden   fp16 (1, hidden, 1, seq)   channels-first hidden states
          position int32 (1,)                 the position of the first token
  states  k_cache_<layer>, v_cache_<layer>  fp16 (1, kv_heads, context, head_dim)
  output  hidden_out fp16 (1, hidden, 1, seq)
Rows past position + seq are written too when a chunk is padded; queries never see them (the mask
hides the future) and the next call overwrites them, so padding needs no special case here.
"""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Function, Program, types

from node.coreml.arch import rope_tables
from node.coreml.mil_layers import NEG, Shared, decoder_layer
from node.coreml.settings import AneSettings
from node.coreml.weights import SliceWeights

HIDDEN_IN, POSITION, HIDDEN_OUT = "hidden", "position", "hidden_out"


def state_names(layer: int) -> tuple[str, str]:
    return f"k_cache_{layer}", f"v_cache_{layer}"


def _opset():
    import coremltools as ct

    return ct.target.iOS18


def state_shape(weights: SliceWeights, settings: AneSettings) -> tuple[int, int, int, int]:
    a = weights.arch
    return (1, a.kv_heads, settings.context_length, a.head_dim)


def _shared(position, weights: SliceWeights, settings: AneSettings, seq: int) -> Shared:
    a, ctx = weights.arch, settings.context_length
    cos, sin = rope_tables(a, ctx)
    positions = mb.add(x=position, y=np.arange(seq, dtype=np.int32), name="positions")      # (seq,)
    future = mb.greater(x=np.arange(ctx, dtype=np.int32)[None, :],
                        y=mb.reshape(x=positions, shape=[seq, 1]))                           # (seq, ctx)
    mask = mb.mul(x=mb.cast(x=future, dtype="fp16"), y=NEG)
    if a.group > 1:
        mask = mb.tile(x=mask, reps=[a.group, 1])
    begin = mb.concat(values=[np.zeros(2, np.int32), position, np.zeros(1, np.int32)], axis=0, name="cache_begin")
    end = mb.concat(values=[np.array([1, a.kv_heads], np.int32), mb.add(x=position, y=np.int32(seq)),
                            np.array([a.head_dim], np.int32)], axis=0, name="cache_end")
    return Shared(
        cos=mb.gather(x=cos, indices=positions, axis=0, name="rope_cos"),
        sin=mb.gather(x=sin, indices=positions, axis=0, name="rope_sin"),
        mask=mask, begin=begin, end=end,
    )


def build_function(weights: SliceWeights, settings: AneSettings, seq: int) -> Program:
    """A one-function program ("main") computing `seq` tokens through the slice."""
    a = weights.arch
    specs = {
        HIDDEN_IN: mb.TensorSpec((1, a.hidden, 1, seq), dtype=types.fp16),
        POSITION: mb.TensorSpec((1,), dtype=types.int32),
    }
    for layer in weights.layers:
        for name in state_names(layer.index):
            specs[name] = mb.StateTensorSpec(state_shape(weights, settings), dtype=types.fp16)
    with Function(specs, opset_version=_opset()) as func:
        shared = _shared(func.inputs[POSITION], weights, settings, seq)
        h = func.inputs[HIDDEN_IN]
        for layer in weights.layers:
            k_state, v_state = (func.inputs[n] for n in state_names(layer.index))
            h = decoder_layer(h, layer, a, seq, shared, k_state, v_state, settings.max_conv_channels)
        func.set_outputs([mb.identity(x=h, name=HIDDEN_OUT)])
    program = Program()
    program.add_function("main", func)
    return program
