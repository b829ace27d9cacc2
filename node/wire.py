"""Tensors on the wire: raw little-endian bytes + dtype + shape, checked on the way in."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from proto import boltpipe_pb2 as pb

# dtype name -> (mlx dtype, numpy dtype of the raw bytes). bfloat16 travels as its bits.
DTYPES: dict[str, tuple[mx.Dtype, np.dtype]] = {
    "float32": (mx.float32, np.dtype("<f4")),
    "float16": (mx.float16, np.dtype("<f2")),
    "bfloat16": (mx.bfloat16, np.dtype("<u2")),
}
_NAMES = {mlx_dtype: name for name, (mlx_dtype, _) in DTYPES.items()}


class WireError(ValueError):
    """A tensor message that does not describe a valid tensor."""


def to_wire(array: mx.array) -> pb.Tensor:
    name = _NAMES.get(array.dtype)
    if name is None:
        raise WireError(f"cannot send dtype {array.dtype}; supported: {', '.join(DTYPES)}")
    raw = array.view(mx.uint16) if name == "bfloat16" else array
    return pb.Tensor(data=np.asarray(raw).tobytes(), dtype=name, shape=list(array.shape))


def from_wire(tensor: pb.Tensor, *, max_elements: int | None = None) -> mx.array:
    if tensor.dtype not in DTYPES:
        raise WireError(f"unknown tensor dtype {tensor.dtype!r}; expected one of {', '.join(DTYPES)}")
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise WireError(f"negative dimension in tensor shape {shape}")
    count = math.prod(shape)
    if max_elements is not None and count > max_elements:
        raise WireError(f"tensor of shape {shape} has {count} elements, more than the limit {max_elements}")
    mlx_dtype, np_dtype = DTYPES[tensor.dtype]
    if len(tensor.data) != count * np_dtype.itemsize:
        raise WireError(
            f"tensor data is {len(tensor.data)} bytes but shape {shape} of {tensor.dtype} needs {count * np_dtype.itemsize}"
        )
    array = mx.array(np.frombuffer(tensor.data, dtype=np_dtype).reshape(shape))
    return array.view(mx.bfloat16) if tensor.dtype == "bfloat16" else array
