"""A real slice of the test model converted to a Core ML ML program, saved, reloaded, and its
numbers checked against MLX on the same slice by executing the MIL program with numpy (Core ML
itself cannot run on Linux). Layers 10-11 of SmolLM2, a 16-token prefill chunk and a 128-position
context keep it quick."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("coremltools")  # a declared dependency; this only makes a broken install readable

from node.coreml.arch import read_arch  # noqa: E402
from node.coreml.builder import HIDDEN_IN, HIDDEN_OUT, POSITION, state_names  # noqa: E402
from node.coreml.interpreter import interpreters  # noqa: E402
from node.coreml.package import FUNCTIONS, convert_slice, load_program, save_chunk, split_layers  # noqa: E402
from node.coreml.settings import AneSettings  # noqa: E402
from node.coreml.weights import read_slice_weights  # noqa: E402
from tests.coreml_support import (  # noqa: E402
    CHUNK, CONTEXT, DECODE, END, PROMPT, START, TOLERANCE, from_channels_first, mlx_reference, relative_error, to_channels_first,
)

SETTINGS = AneSettings(context_length=CONTEXT, prefill_chunk=CHUNK)
STATE_SHAPE = (1, 3, CONTEXT, 64)   # SmolLM2: 3 KV heads of 64


@pytest.fixture(scope="module")
def config(smollm2_dir: Path) -> dict:
    return json.loads((smollm2_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def converted(smollm2_dir: Path, config: dict, tmp_path_factory: pytest.TempPathFactory):
    return convert_slice(smollm2_dir, config, START, END, SETTINGS, cache_dir=tmp_path_factory.mktemp("coreml"))


@pytest.fixture(scope="module")
def built(smollm2_dir: Path, config: dict, tmp_path_factory: pytest.TempPathFactory):
    """The converted in-memory model of one chunk (its program is what gets saved)."""
    weights = read_slice_weights(smollm2_dir, config, read_arch(config), START, END)
    return save_chunk(weights, SETTINGS, tmp_path_factory.mktemp("built") / "slice.mlpackage")


def test_the_package_holds_decode_and_prefill_with_the_documented_interface(converted):
    import coremltools as ct

    assert [(c.start, c.end) for c in converted.chunks] == [(START, END)]
    spec = ct.models.MLModel(str(converted.chunks[0].package), skip_model_load=True).get_spec()
    functions = {f.name: f for f in spec.description.functions}
    assert set(functions) == {"decode", "prefill"} and spec.description.defaultFunctionName == "decode"
    for name, seq in (("decode", 1), ("prefill", CHUNK)):
        f = functions[name]
        inputs = {i.name: (tuple(i.type.multiArrayType.shape), i.type.multiArrayType.dataType) for i in f.input}
        fp16, int32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16, ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
        assert inputs == {HIDDEN_IN: ((1, 576, 1, seq), fp16), POSITION: ((1,), int32)}
        assert [(o.name, tuple(o.type.multiArrayType.shape)) for o in f.output] == [(HIDDEN_OUT, (1, 576, 1, seq))]
        states = {s.name: (tuple(s.type.stateType.arrayType.shape), s.type.stateType.arrayType.dataType) for s in f.state}
        want = {n: (STATE_SHAPE, fp16) for layer in range(START, END) for n in state_names(layer)}
        assert states == want


def test_weights_stay_4_bit_and_are_shared_by_both_functions(converted):
    program = load_program(converted.chunks[0].package)
    for function in program.functions.values():
        kinds = [op.op_type for op in function.operations]
        assert kinds.count("constexpr_blockwise_shift_scale") == 7 * (END - START)   # every projection
        assert kinds.count("conv") == 7 * (END - START)
    dense_fp16 = (END - START) * 2 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536)
    size = converted.package_bytes()
    # One copy of 4-bit weights (+ fp16 scales and offsets per 32) for both functions: well under
    # a third of one dense fp16 copy.
    assert size < dense_fp16 / 3, f"package is {size} bytes; dense fp16 weights would be {dense_fp16}"


def test_a_second_conversion_comes_from_the_cache(smollm2_dir, config, converted):
    again = convert_slice(smollm2_dir, config, START, END, SETTINGS, cache_dir=converted.root.parent)
    assert again.root == converted.root and again.convert_seconds == converted.convert_seconds
    other = convert_slice(smollm2_dir, config, START, END, AneSettings(context_length=CONTEXT, prefill_chunk=8),
                          cache_dir=converted.root.parent)
    assert other.root != converted.root, "other settings are another program"


def _each_state_read_and_written_once(functions: dict) -> None:
    for name, function in functions.items():
        reads = [op.input.name for op in function.operations if op.op_type == "read_state"]
        writes = [op.state.name for op in function.operations if op.op_type == "coreml_update_state"]
        states = sorted(n for layer in range(START, END) for n in state_names(layer))
        assert sorted(reads) == states and sorted(writes) == states, f"{name}: reads {reads}, writes {writes}"


def _run_against_mlx(run: dict, reference) -> float:
    """The prompt through prefill (padded to the chunk), then each decode step, states carried."""
    states = {n: np.zeros(STATE_SHAPE, np.float16) for layer in range(START, END) for n in state_names(layer)}
    worst = 0.0
    out = run["prefill"].run({HIDDEN_IN: to_channels_first(reference.hidden[:, :PROMPT], CHUNK),
                              POSITION: np.array([0], np.int32)}, states)
    steps = [from_channels_first(out[HIDDEN_OUT], PROMPT)]
    for i in range(DECODE):
        x = reference.hidden[:, PROMPT + i:PROMPT + i + 1]
        out = run["decode"].run({HIDDEN_IN: to_channels_first(x), POSITION: np.array([PROMPT + i], np.int32)}, states)
        steps.append(from_channels_first(out[HIDDEN_OUT], 1))
    for i, (got, want) in enumerate(zip(steps, reference.outputs)):
        error = relative_error(got, want)
        assert error < TOLERANCE, f"step {i}: error {error:.4f} of the largest magnitude"
        worst = max(worst, error)
    assert np.all(states[state_names(END - 1)[1]][:, :, PROMPT + DECODE:] == 0), "rows past the last token untouched"
    return worst


def test_built_program_matches_mlx(built, smollm2_dir):
    program = built._mil_program   # after the converter's passes: where merged state reads would show
    assert set(program.functions) == set(FUNCTIONS)
    _each_state_read_and_written_once(program.functions)
    worst = _run_against_mlx(interpreters(program), mlx_reference(smollm2_dir))
    print(f"built program: max error {worst:.5f} of the largest magnitude")


def test_saved_package_reloaded_from_disk_matches_mlx(converted, smollm2_dir):
    program = load_program(converted.chunks[0].package)
    assert set(program.functions) == set(FUNCTIONS)
    _each_state_read_and_written_once(program.functions)
    worst = _run_against_mlx(interpreters(program), mlx_reference(smollm2_dir))
    print(f"reloaded package: max error {worst:.5f} of the largest magnitude")


def test_a_slice_past_the_size_limit_is_split_into_chunks(smollm2_dir, config):
    weights = read_slice_weights(smollm2_dir, config, read_arch(config), START, END)
    one_layer = weights.layers[0].stored_bytes()
    groups = split_layers(weights, max_bytes=one_layer + 1)
    assert [(g.start, g.end) for g in groups] == [(10, 11), (11, 12)]
    assert [(g.start, g.end) for g in split_layers(weights, max_bytes=10 * one_layer)] == [(10, 12)]
    with pytest.raises(Exception, match="layer 10 alone holds"):
        split_layers(weights, max_bytes=one_layer // 2)
