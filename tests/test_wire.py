"""Tensors on the wire: bit-exact round trips and strict checks on the way in."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from node.wire import DTYPES, WireError, from_wire, to_wire
from proto import boltpipe_pb2 as pb

SHAPES = [(), (1,), (7,), (2, 3), (1, 5, 576), (2, 3, 4, 5), (0,), (3, 0, 2)]
BITS = {"float32": (mx.float32, mx.uint32, np.uint32), "float16": (mx.float16, mx.uint16, np.uint16),
        "bfloat16": (mx.bfloat16, mx.uint16, np.uint16)}


def random_bits(name: str, shape: tuple, seed: int) -> mx.array:
    """Every bit pattern is fair game: NaNs with payloads, infinities, -0.0, subnormals."""
    dtype, uint_mx, uint_np = BITS[name]
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, np.iinfo(uint_np).max, size=shape, dtype=uint_np, endpoint=True)
    return mx.array(bits).view(dtype)


def bits_of(a: mx.array) -> np.ndarray:
    return np.array(a.view(BITS[_name(a)][1]))


def _name(a: mx.array) -> str:
    return {v[0]: k for k, v in BITS.items()}[a.dtype]


@pytest.mark.parametrize("name", list(BITS))
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_is_bit_exact(name: str, shape: tuple) -> None:
    x = random_bits(name, shape, seed=len(shape) * 31 + sum(shape))
    msg = to_wire(x)
    assert msg.dtype == name
    assert tuple(msg.shape) == shape
    assert len(msg.data) == int(np.prod(shape)) * np.dtype(BITS[name][2]).itemsize
    y = from_wire(msg)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert np.array_equal(bits_of(y), bits_of(x))


@pytest.mark.parametrize("name", list(BITS))
def test_round_trip_through_serialized_protobuf(name: str) -> None:
    x = random_bits(name, (3, 17), seed=5)
    again = pb.Tensor.FromString(to_wire(x).SerializeToString())
    assert np.array_equal(bits_of(from_wire(again)), bits_of(x))


def test_special_values_survive() -> None:
    vals = [0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), 6.0e-8, 65504.0]
    for dtype in (mx.float32, mx.float16, mx.bfloat16):
        x = mx.array(vals, dtype=dtype)
        y = from_wire(to_wire(x))
        assert np.array_equal(bits_of(y), bits_of(x)), dtype
        assert np.signbit(np.array(y.astype(mx.float32))[1])  # -0.0 keeps its sign


def test_bytes_are_little_endian_raw_values() -> None:
    msg = to_wire(mx.array([1.0, -2.0], dtype=mx.float32))
    assert msg.data == np.array([1.0, -2.0], dtype="<f4").tobytes()
    msg = to_wire(mx.array([1.0], dtype=mx.bfloat16))
    assert msg.data == b"\x80\x3f"  # bfloat16 1.0 is 0x3F80
    msg = to_wire(mx.array([1.0], dtype=mx.float16))
    assert msg.data == b"\x00\x3c"  # float16 1.0 is 0x3C00


def test_receiver_decodes_a_hand_built_message() -> None:
    values = np.arange(6, dtype="<f4").reshape(2, 3) / 4
    y = from_wire(pb.Tensor(data=values.tobytes(), dtype="float32", shape=[2, 3]))
    assert y.dtype == mx.float32
    assert np.array_equal(np.array(y), values)


def test_non_contiguous_arrays_are_sent_in_logical_order() -> None:
    for dtype in (mx.float32, mx.float16, mx.bfloat16):
        base = mx.arange(24, dtype=mx.float32).reshape(2, 3, 4).astype(dtype)
        for view in (base.transpose(2, 0, 1), base[:, ::2, 1:3], base[..., ::-1]):
            y = from_wire(to_wire(view))
            assert y.shape == view.shape
            assert np.array_equal(np.array(y.astype(mx.float32)), np.array(view.astype(mx.float32)))


def test_received_array_is_independent_of_the_message_bytes() -> None:
    msg = to_wire(mx.array([1.0, 2.0, 3.0]))
    y = from_wire(msg)
    msg.data = b"\x00" * 12
    assert y.tolist() == [1.0, 2.0, 3.0]


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int32", "float64", "", "FLOAT32", "bf16"])
def test_unknown_dtype(dtype: str) -> None:
    with pytest.raises(WireError, match=rf"unknown tensor dtype {dtype!r}; expected one of float32, float16, bfloat16"):
        from_wire(pb.Tensor(data=b"\x00" * 4, dtype=dtype, shape=[1]))


@pytest.mark.parametrize(
    "dtype, shape, nbytes",
    [("float32", [2, 3], 23), ("float32", [2, 3], 25), ("float16", [4], 16), ("bfloat16", [4], 4),
     ("float32", [], 0), ("float16", [0], 2)],
)
def test_data_length_must_match_shape(dtype: str, shape: list, nbytes: int) -> None:
    with pytest.raises(WireError, match=rf"tensor data is {nbytes} bytes but shape"):
        from_wire(pb.Tensor(data=b"\x01" * nbytes, dtype=dtype, shape=shape))


def test_length_message_says_what_was_needed() -> None:
    with pytest.raises(WireError) as info:
        from_wire(pb.Tensor(data=b"\x00" * 10, dtype="float16", shape=[2, 3]))
    assert str(info.value) == "tensor data is 10 bytes but shape (2, 3) of float16 needs 12"


@pytest.mark.parametrize("shape", [[-1], [2, -3], [-2, -2]])
def test_negative_dimensions(shape: list) -> None:
    # (-2, -2) has a positive product; it must be refused all the same.
    with pytest.raises(WireError, match="negative dimension"):
        from_wire(pb.Tensor(data=b"\x00" * 16, dtype="float32", shape=shape))


def test_max_elements() -> None:
    data = np.zeros((4, 5), dtype="<f4").tobytes()
    msg = pb.Tensor(data=data, dtype="float32", shape=[4, 5])
    assert from_wire(msg, max_elements=20).shape == (4, 5)  # exactly at the limit is fine
    with pytest.raises(WireError, match=r"has 20 elements, more than the limit 19"):
        from_wire(msg, max_elements=19)


def test_max_elements_is_checked_before_the_data() -> None:
    # A huge claimed shape is refused for its size without trusting or reading the bytes.
    with pytest.raises(WireError, match="more than the limit"):
        from_wire(pb.Tensor(data=b"", dtype="bfloat16", shape=[1 << 20, 1 << 20]), max_elements=1 << 24)


@pytest.mark.parametrize("dtype", [mx.int32, mx.uint16, mx.float64, mx.bool_, mx.int8])
def test_unsupported_dtype_on_send(dtype) -> None:
    if dtype == mx.float64:
        x = mx.array([1.0, 2.0], dtype=mx.float32).astype(mx.float64, stream=mx.cpu)
    else:
        x = mx.array([1, 0], dtype=dtype)
    with pytest.raises(WireError, match=r"cannot send dtype .*; supported: float32, float16, bfloat16"):
        to_wire(x)


def test_wire_error_is_a_value_error_and_dtypes_table_is_complete() -> None:
    assert issubclass(WireError, ValueError)
    assert set(DTYPES) == {"float32", "float16", "bfloat16"}
