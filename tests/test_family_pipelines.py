"""Families with their own kinds of layer through real worker processes (gRPC, shards of the plan's
cut, hidden states on the wire): sliding windows with attention sinks and experts (gpt_oss), linear
attention (qwen3_next), latent attention (deepseek_v3), a vision-language checkpoint served as text
(gemma3), and a MoE with a real model's layer count (48 layers of a tiny-width qwen3_moe) split in two
with experts on both sides. Each gives mlx-lm's own greedy tokens in one process, also when a worker
is killed mid-stream and the request replayed (sliding-window and linear-attention caches rebuilt)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from cluster.pipeline.engine import GenerationParams
from tests.cluster_harness import LoopCluster, inventory_ports, worker_processes, write_inventory
from tests.stage_chain import CHUNK, mlx_lm_greedy
from tests.tiny_models import write_tiny_model

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

NEW_TOKENS = 10
PROMPT = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 2, 198, 1, 4093, 198]  # 15 ids


def _serve_and_compare(model_dir: Path, nodes: int, tmp_path: Path, *, kill_after: int | None = None) -> list:
    """Greedy tokens through `nodes` workers equal mlx-lm's. With `kill_after`, the middle worker is
    killed once that many tokens arrived: the coordinator starts it again, reloads its slice, and the
    request is replayed (the same steps rebuild every cache, whatever its kind) to the same tokens."""
    harness = LoopCluster(write_inventory(tmp_path, nodes=nodes, model_path=model_dir, prefill_chunk=CHUNK),
                          tmp_path / "logs")
    replays = []
    harness.cluster.engine.on_replay = lambda: replays.append(1)
    try:
        plan = harness.cluster.plan

        async def generate() -> list[int]:
            params = GenerationParams(max_tokens=NEW_TOKENS, ignore_eos=True)
            tokens = []
            async for step in harness.cluster.engine.tokens(PROMPT, params):
                tokens.append(step.token_id)
                if len(tokens) == kill_after:
                    os.kill(harness.cluster.local_workers[nodes // 2].pid, signal.SIGKILL)
            return tokens

        got = harness.run(generate())
        assert len(replays) == (1 if kill_after else 0)
        assert [i.active_sessions for i in harness.run(harness.cluster.client.infos())] == [0] * nodes
    finally:
        harness.close()
    assert worker_processes(inventory_ports(harness.inventory)) == []
    assert got == mlx_lm_greedy(model_dir, PROMPT, NEW_TOKENS)
    return plan


@pytest.mark.parametrize("model_type", ["gpt_oss", "qwen3_next", "deepseek_v3", "gemma3"])
def test_family_through_three_workers(model_type: str, smollm2_dir: Path, tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / model_type, model_type, tokenizer_from=smollm2_dir)
    plan = _serve_and_compare(model_dir, 3, tmp_path)
    assert [p.num_layers for p in plan] and sum(p.num_layers for p in plan) == 6 and len(plan) == 3


@pytest.mark.parametrize("model_type", ["qwen3_next", "gpt_oss"])
def test_a_replayed_request_rebuilds_windowed_and_linear_caches(model_type: str, smollm2_dir: Path,
                                                                tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / model_type, model_type, tokenizer_from=smollm2_dir)
    _serve_and_compare(model_dir, 3, tmp_path, kill_after=4)


def test_48_layer_moe_split_in_two_with_experts_on_both_sides(smollm2_dir: Path, tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "moe48", "qwen3_moe", num_hidden_layers=48, tokenizer_from=smollm2_dir)
    first, second = _serve_and_compare(model_dir, 2, tmp_path)
    # Layer 0 is dense (mlp_only_layers); every other layer holds experts, so both stages do.
    assert first.layer_start == 0 and first.layer_end == second.layer_start and second.layer_end == 48
    assert 2 <= first.num_layers <= 46
