"""The Core ML stage as the StageRunner drives it, on Linux through the MIL interpreter: a slice
split into two packages (one per layer) run back to back, prompts cut into prefill chunks with the
last one padded, multi-token steps near the end of the fixed context falling back to decode, a
session's KV states carried from step to step, and a step past the context refused."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("coremltools")

from node.coreml.executors import InterpreterExecutor  # noqa: E402
from node.coreml.package import convert_slice  # noqa: E402
from node.coreml.settings import AneSettings  # noqa: E402
from node.coreml.stage import AneStage, AneStageError  # noqa: E402
from node.model_config import read_model_info  # noqa: E402
from node.stage_model import LayerRange, load_stage  # noqa: E402
from tests.coreml_support import END, START, TOLERANCE, mlx_reference, relative_error  # noqa: E402

# 12 prompt tokens in chunks of 8 (8, then 4 padded to 8); a 2-token step at 12 with 12 + 8 > 18
# positions left goes through decode twice; then single tokens up to the context's end.
CONTEXT, CHUNK = 18, 8
SPLITS = (12, 2, 1, 1)


@pytest.fixture(scope="module")
def stage(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AneStage:
    info = read_model_info(smollm2_dir)
    one_layer = 2_300_000   # SmolLM2 stores ~2.2 MB per layer at 4 bits: one package per layer
    settings = AneSettings(context_length=CONTEXT, prefill_chunk=CHUNK, max_package_bytes=one_layer)
    converted = convert_slice(info.path, info.config, START, END, settings, cache_dir=tmp_path_factory.mktemp("c"))
    assert [(c.start, c.end) for c in converted.chunks] == [(10, 11), (11, 12)]
    ends = load_stage(info.path, LayerRange(START, END), keep_layers=False)
    assert ends.layers == [] and not ends.is_first and not ends.is_last
    return AneStage(ends, converted, InterpreterExecutor(converted))


def test_steps_through_two_chunks_match_mlx(stage: AneStage, smollm2_dir: Path):
    reference = mlx_reference(smollm2_dir, SPLITS)
    cache = stage.make_cache()
    # Fixed-size states from the first step: 2 layers x K and V x 3 heads x 18 positions x 64 x fp16.
    assert cache[0].nbytes == 2 * 2 * 3 * CONTEXT * 64 * 2
    bounds = np.cumsum((0,) + SPLITS)
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        out = stage.run_layers(mx.array(reference.hidden[:, a:b]), cache)
        assert out.shape == (1, b - a, 576) and out.dtype == mx.float32
        error = relative_error(np.array(out), reference.outputs[i])
        assert error < TOLERANCE, f"step {i} ({b - a} tokens at {a}): error {error:.4f}"
    assert cache[0].offset == sum(SPLITS) == 16


def test_a_step_past_the_fixed_context_is_refused(stage: AneStage, smollm2_dir: Path):
    reference = mlx_reference(smollm2_dir, SPLITS)
    cache = stage.make_cache()
    stage.run_layers(mx.array(reference.hidden[:, :12]), cache)
    with pytest.raises(AneStageError, match="holds 18 positions"):
        stage.run_layers(mx.array(np.concatenate([reference.hidden] * 2, axis=1)[:, :7]), cache)
    assert cache[0].offset == 12, "a refused step leaves the session as it was"


def test_sessions_do_not_share_states(stage: AneStage, smollm2_dir: Path):
    reference = mlx_reference(smollm2_dir, SPLITS)
    first, second = stage.make_cache(), stage.make_cache()
    stage.run_layers(mx.array(reference.hidden[:, :12]), first)
    # A fresh session given the same prompt must compute the same, untouched by the first one.
    again = stage.run_layers(mx.array(reference.hidden[:, :12]), second)
    assert relative_error(np.array(again), reference.outputs[0]) < TOLERANCE
