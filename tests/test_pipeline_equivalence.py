"""Greedy decoding through 1-4 worker processes gives exactly mlx-lm's tokens, and a
seeded sampled run is the same through 1 and 3 stages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

from cluster.pipeline.engine import GenerationParams
from cluster.pipeline.tokenizer import PromptTokenizer
from tests.cluster_harness import LoopCluster, inventory_ports, worker_processes, write_inventory

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

NEW_TOKENS = 48
CHAT_PROMPTS = ["What is the capital of France?", "Write a short poem about the sea, please."]
RAW_PROMPTS = ["The three most important inventions of the twentieth century were", "def fibonacci(n):\n"]


@pytest.fixture(scope="module")
def prompts(smollm2_dir: Path) -> list[list[int]]:
    tok = PromptTokenizer(smollm2_dir)
    chat = [tok.encode_user_prompt(p) for p in CHAT_PROMPTS]
    raw = [tok.encode_user_prompt(p, raw=True) for p in RAW_PROMPTS]
    assert all(ids[:1] == [1] for ids in chat), "chat prompts start with <|im_start|>"
    assert all(1 not in ids for ids in raw), "raw prompts carry no template tokens"
    return chat + raw


@pytest.fixture(scope="module")
def reference(smollm2_dir: Path, prompts: list[list[int]]) -> list[list[int]]:
    """mlx-lm's own generation loop, in this process, on the same model directory."""
    model, _ = load_model(smollm2_dir)
    return [[t for t, _ in generate_step(mx.array(ids), model, max_tokens=NEW_TOKENS)] for ids in prompts]


async def _all(coros):
    return await asyncio.gather(*coros)


async def _greedy(cluster, prompt_ids: list[int]) -> list[int]:
    params = GenerationParams(max_tokens=NEW_TOKENS, ignore_eos=True)
    return [step.token_id async for step in cluster.engine.tokens(prompt_ids, params)]


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_greedy_tokens_equal_single_process_mlx_lm(stages, smollm2_dir, prompts, reference, tmp_path):
    inventory = write_inventory(tmp_path, nodes=stages, model_path=smollm2_dir)
    harness = LoopCluster(inventory, tmp_path / "logs")
    try:
        assert [p.num_layers for p in harness.cluster.plan] and sum(p.num_layers for p in harness.cluster.plan) == 30
        # All prompts at once: sessions must not leak into each other either.
        got = harness.run(_all(_greedy(harness.cluster, ids) for ids in prompts))
        for prompt_index, (tokens, expected) in enumerate(zip(got, reference)):
            assert len(tokens) == NEW_TOKENS
            assert tokens == expected, f"prompt {prompt_index} diverged through {stages} stages"
        infos = harness.run(harness.cluster.client.infos())
        assert [i.active_sessions for i in infos] == [0] * stages, "every session was ended on every worker"
    finally:
        harness.close()
    assert worker_processes(inventory_ports(harness.inventory)) == []


async def _sampled(cluster, prompt_ids: list[int], seed: int) -> list[int]:
    params = GenerationParams(max_tokens=24, temperature=0.8, top_p=0.9, seed=seed, ignore_eos=True)
    return [step.token_id async for step in cluster.engine.tokens(prompt_ids, params)]


def test_seeded_sampling_same_through_one_and_three_stages(smollm2_dir, prompts, tmp_path):
    runs = {}
    for stages in (1, 3):
        harness = LoopCluster(write_inventory(tmp_path, nodes=stages, model_path=smollm2_dir), tmp_path / f"logs{stages}")
        try:
            runs[stages] = [harness.run(_sampled(harness.cluster, prompts[1], seed)) for seed in (7, 7, 8)]
        finally:
            harness.close()
    one, three = runs[1], runs[3]
    assert one == three, "a seed gives the same tokens however the layers are split"
    assert one[0] == one[1], "the same seed repeats"
    assert one[0] != one[2], "another seed samples other tokens"
