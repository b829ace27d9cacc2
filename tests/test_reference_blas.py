"""The reference (mlx-lm in this process) computes as the workers do: same BLAS (tests/worker_blas.py),
so a cluster's greedy tokens equal it and so do their logprobs, bit for bit, not just up to the
rounding where two BLAS libraries differ (about 1e-4 in the demo model's float32 attention)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cluster.pipeline.engine import GenerationParams
from node.blas import blas_in_use
from tests.cluster_harness import running_cluster, write_inventory
from cluster.inventory import load_inventory
from tests.reference import greedy_steps, tokenizer_for

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

NEW_TOKENS = 24


def test_workers_and_reference_share_the_blas_and_every_logprob(tmp_path: Path, smollm2_dir: Path) -> None:
    ids = tokenizer_for(smollm2_dir).encode_user_prompt("Name three rivers of Europe and where they flow.")
    expected = greedy_steps(smollm2_dir, ids, NEW_TOKENS)

    async def through_cluster():
        inventory = load_inventory(write_inventory(tmp_path, nodes=2, model_path=smollm2_dir))
        async with running_cluster(inventory, tmp_path / "logs") as cluster:
            # Plain steps: a speculative one checks several positions in one product, which rounds
            # differently (its tokens are still mlx-lm's: tests/test_speculative_pipeline.py).
            params = GenerationParams(max_tokens=NEW_TOKENS, ignore_eos=True, speculate=False)
            steps = [s async for s in cluster.engine.tokens(ids, params)]
            return [info.blas for info in cluster.infos], [(s.token_id, s.logprob) for s in steps]

    blas, got = asyncio.run(through_cluster())
    here = blas_in_use()
    assert all(os.path.realpath(b) == os.path.realpath(here) for b in blas), (blas, here)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert got == expected  # logprobs too, exactly
