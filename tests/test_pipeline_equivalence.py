"""Greedy decoding through 1-4 worker processes gives exactly mlx-lm's tokens, and a
seeded sampled run is the same through 1 and 3 stages. One cluster per stage count for the module
(the sampling test reuses the 1- and 3-stage ones); every session is ended on every worker after
each test, and every worker process is gone when the module ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable, Iterator

import pytest

from cluster.pipeline.engine import GenerationParams
from cluster.pipeline.tokenizer import PromptTokenizer
from tests.cluster_harness import LoopCluster, clusters_by_stage_count
from tests.reference import greedy_tokens

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

NEW_TOKENS = 32
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
    return [greedy_tokens(smollm2_dir, ids, NEW_TOKENS) for ids in prompts]


@pytest.fixture(scope="module")
def cluster_of(smollm2_dir: Path, tmp_path_factory) -> Iterator[Callable[[int], LoopCluster]]:
    """A cluster of N stages, brought up on first use and kept for the module."""
    with clusters_by_stage_count(smollm2_dir, tmp_path_factory, "stages") as get:
        yield get


def _sessions_open(harness: LoopCluster) -> list[int]:
    return [i.active_sessions for i in harness.run(harness.cluster.client.infos())]


async def _all(coros):
    return await asyncio.gather(*coros)


async def _greedy(cluster, prompt_ids: list[int]) -> list[int]:
    params = GenerationParams(max_tokens=NEW_TOKENS, ignore_eos=True)
    return [step.token_id async for step in cluster.engine.tokens(prompt_ids, params)]


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_greedy_tokens_equal_single_process_mlx_lm(stages, cluster_of, prompts, reference):
    harness = cluster_of(stages)
    assert len(harness.cluster.plan) == stages and sum(p.num_layers for p in harness.cluster.plan) == 30
    # All prompts at once: sessions must not leak into each other either.
    got = harness.run(_all(_greedy(harness.cluster, ids) for ids in prompts))
    for prompt_index, (tokens, expected) in enumerate(zip(got, reference)):
        assert len(tokens) == NEW_TOKENS
        assert tokens == expected, f"prompt {prompt_index} diverged through {stages} stages"
    assert _sessions_open(harness) == [0] * stages, "every session was ended on every worker"


async def _sampled(cluster, prompt_ids: list[int], seed: int) -> list[int]:
    params = GenerationParams(max_tokens=16, temperature=0.8, top_p=0.9, seed=seed, ignore_eos=True)
    return [step.token_id async for step in cluster.engine.tokens(prompt_ids, params)]


def test_seeded_sampling_same_through_one_and_three_stages(cluster_of, prompts):
    runs = {}
    for stages in (1, 3):
        harness = cluster_of(stages)
        # At once: a session's random state is its own, whatever else runs beside it.
        runs[stages] = harness.run(_all(_sampled(harness.cluster, prompts[1], seed) for seed in (7, 7, 8)))
        assert _sessions_open(harness) == [0] * stages
    one, three = runs[1], runs[3]
    assert one == three, "a seed gives the same tokens however the layers are split"
    assert one[0] == one[1], "the same seed repeats"
    assert one[0] != one[2], "another seed samples other tokens"


EIGHT_PROMPTS = ["Name a colour.", "Why is the sky blue? Explain it to a child in two sentences.",
                 "List three fruits", "What is 2 + 2?", "Tell me about the moon landing of 1969 and who walked there.",
                 "Say hello", "Translate 'good morning' into French and Spanish.", "Who wrote Hamlet?"]


def test_eight_concurrent_streams_through_three_stages_equal_each_prompt_alone(cluster_of, smollm2_dir):
    """Decode steps of the eight sessions travel the ring as batches (each stage computes a group of
    them in one forward pass, rows at different positions), yet every stream is token for token
    what mlx-lm gives its prompt alone in one process; and the stages did batch."""
    harness = cluster_of(3)
    tok = PromptTokenizer(smollm2_dir)
    prompts = [tok.encode_user_prompt(p) for p in EIGHT_PROMPTS]
    assert len({len(p) for p in prompts}) > 4, "prompts of different lengths: rows sit at different positions"
    expected = [greedy_tokens(smollm2_dir, ids, NEW_TOKENS) for ids in prompts]
    got = harness.run(_all(_greedy(harness.cluster, ids) for ids in prompts))
    for index, (tokens, want) in enumerate(zip(got, expected)):
        assert tokens == want, f"stream {index} differs from its prompt alone"
    infos = harness.run(harness.cluster.client.infos())
    assert all(i.recent_batch_size > 1.5 for i in infos), [i.recent_batch_size for i in infos]
    assert _sessions_open(harness) == [0] * 3
