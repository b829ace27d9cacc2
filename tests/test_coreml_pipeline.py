"""A mixed pipeline, one Core ML stage and one MLX stage, gives one mlx-lm process's greedy tokens.

On macOS the Core ML stage runs on the Neural Engine; everywhere, the same worker code runs with
the MIL interpreter in place of Core ML (BOLTPIPE_COREML_EXECUTOR=interpreter), so the conversion
on the worker, the SliceSpec backend, per-session states and chunked prefill are checked on Linux
too. The Core ML stage gets a few of the layers and a 256-token context to stay quick."""

from __future__ import annotations

import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

pytest.importorskip("coremltools")

from cluster.pipeline.engine import GenerationParams  # noqa: E402
from cluster.pipeline.tokenizer import PromptTokenizer  # noqa: E402
from node.coreml.availability import EXECUTOR_ENV  # noqa: E402
from tests.cluster_harness import LoopCluster, free_ports, inventory_ports, worker_processes  # noqa: E402
from tests.coreml_support import CHUNK, CONTEXT, END, START, TOLERANCE, mlx_reference, relative_error  # noqa: E402

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

NEW_TOKENS = 16
PROMPTS = ["What is the capital of France?", "def fibonacci(n):\n"]
MAC_ONLY = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predicts only on macOS (Linux runs the "
                              "same programs through the MIL interpreter in the other tests)")


def _inventory(tmp_path: Path, model: Path) -> Path:
    ports = free_ports(3)
    data = {"cluster": "mixed", "model": {"path": str(model)},
            "serve": {"host": "127.0.0.1", "port": ports[2], "context_length": 256, "max_concurrent": 2},
            "pipeline": {"prefill_chunk": 32},
            "nodes": [{"name": "w1", "host": "127.0.0.1", "port": ports[0], "backend": "ane", "weight": 0.15},
                      {"name": "w2", "host": "127.0.0.1", "port": ports[1], "backend": "auto"}]}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _greedy(harness: LoopCluster, ids: list[int]) -> list[int]:
    async def run() -> list[int]:
        params = GenerationParams(max_tokens=NEW_TOKENS, ignore_eos=True)
        return [step.token_id async for step in harness.cluster.engine.tokens(ids, params)]
    return harness.run(run())


def _mixed_pipeline_matches_mlx_lm(smollm2_dir: Path, tmp_path: Path, expect_executor: str | None) -> None:
    tok = PromptTokenizer(smollm2_dir)
    prompts = [tok.encode_user_prompt(PROMPTS[0]), tok.encode_user_prompt(PROMPTS[1], raw=True)]
    model, _ = load_model(smollm2_dir)
    reference = [[t for t, _ in generate_step(mx.array(ids), model, max_tokens=NEW_TOKENS)] for ids in prompts]
    harness = LoopCluster(_inventory(tmp_path, smollm2_dir), tmp_path / "logs")
    try:
        ane, gpu = harness.cluster.plan
        assert ane.backend.startswith("coreml-ane:context=256,") and gpu.backend == "mlx"
        assert ane.layer_start == 0 and 0 < ane.num_layers < 15
        got = [_greedy(harness, ids) for ids in prompts]
        assert got == reference
        infos = harness.run(harness.cluster.client.infos())
        assert infos[0].slice.backend == ane.backend
        assert "coreml-ane" in infos[0].backends
        if expect_executor:
            assert f"coreml-ane-executor:{expect_executor}" in infos[0].backends
        else:   # the compute plan's word on which ops leave the Neural Engine
            assert any(b.startswith("coreml-ane-cpu-ops:") for b in infos[0].backends), infos[0].backends
        assert [i.active_sessions for i in infos] == [0, 0]
    finally:
        harness.close()
    assert worker_processes(inventory_ports(harness.inventory)) == []


def test_mixed_pipeline_through_the_interpreter_matches_mlx_lm(smollm2_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(EXECUTOR_ENV, "interpreter")        # the workers inherit it
    monkeypatch.setenv("BOLTPIPE_HOME", str(tmp_path / "home"))   # where the worker caches its conversion
    _mixed_pipeline_matches_mlx_lm(smollm2_dir, tmp_path, "interpreter")
    assert list((tmp_path / "home" / "coreml").glob("*/layers-0-*.mlpackage")), "converted once, cached"


@MAC_ONLY
def test_mixed_pipeline_on_the_neural_engine_matches_mlx_lm(smollm2_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    monkeypatch.setenv("BOLTPIPE_HOME", str(tmp_path / "home"))
    _mixed_pipeline_matches_mlx_lm(smollm2_dir, tmp_path, None)


@MAC_ONLY
def test_core_ml_predictions_match_mlx(smollm2_dir, tmp_path):
    from node.coreml.availability import neural_engine_present
    from node.coreml.executors import CoreMLExecutor
    from node.coreml.package import convert_slice
    from node.coreml.settings import AneSettings
    from node.model_config import read_model_info
    from tests.coreml_support import from_channels_first, to_channels_first

    assert neural_engine_present(), "this Mac reports no Neural Engine"
    info = read_model_info(smollm2_dir)
    converted = convert_slice(info.path, info.config, START, END, AneSettings(context_length=CONTEXT, prefill_chunk=CHUNK),
                              cache_dir=tmp_path)
    executor = CoreMLExecutor(converted)
    assert converted.chunks[0].compiled.is_dir(), "compiled once, beside the package"
    reference = mlx_reference(smollm2_dir)
    state = executor.new_state(0)
    prompt = reference.splits[0]
    out = executor.predict(0, "prefill", to_channels_first(reference.hidden[:, :prompt], CHUNK), 0, state)
    steps = [from_channels_first(out, prompt)]
    for i in range(len(reference.splits) - 1):
        x = reference.hidden[:, prompt + i:prompt + i + 1]
        steps.append(from_channels_first(executor.predict(0, "decode", to_channels_first(x), prompt + i, state), 1))
    for i, (got, want) in enumerate(zip(steps, reference.outputs)):
        assert relative_error(got, want) < TOLERANCE, f"step {i}"
    assert np.isfinite(steps[-1]).all()
