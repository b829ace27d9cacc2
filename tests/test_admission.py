"""Admission limits from the KV budget, and the queue's fast refusals."""

from __future__ import annotations

import asyncio

import pytest

from cluster.api.admission import Admission, AdmissionRefused
from cluster.planning.kv_budget import kv_bytes_per_token, session_limit

SMOLLM2 = {"num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576}


def test_kv_bytes_per_token_of_smollm2() -> None:
    # 3 KV heads x 64 dims, keys and values, float32, 30 layers.
    assert kv_bytes_per_token(SMOLLM2, 30, 4) == 30 * 2 * 3 * 64 * 4
    assert kv_bytes_per_token({**SMOLLM2, "head_dim": 128}, 1, 2) == 2 * 3 * 128 * 2
    assert kv_bytes_per_token({"num_attention_heads": 8, "hidden_size": 512}, 1, 2) == 2 * 8 * 64 * 2


def test_session_limit_follows_the_largest_stage() -> None:
    per_token_10_layers = kv_bytes_per_token(SMOLLM2, 10, 4)
    budget = per_token_10_layers * 1000 * 5 + 1
    assert session_limit([10, 10, 10], SMOLLM2, context_length=1000, kv_budget_bytes=budget,
                         dtype_bytes=4, configured_max=64) == 5
    assert session_limit([10, 10, 12], SMOLLM2, context_length=1000, kv_budget_bytes=budget,
                         dtype_bytes=4, configured_max=64) == 4
    assert session_limit([10, 10, 10], SMOLLM2, context_length=1000, kv_budget_bytes=budget,
                         dtype_bytes=4, configured_max=3) == 3
    assert session_limit([10], SMOLLM2, context_length=10**6, kv_budget_bytes=budget,
                         dtype_bytes=4, configured_max=8) == 0


def test_requests_beyond_the_queue_are_refused_at_once_and_admitted_ones_finish() -> None:
    async def scenario() -> tuple[list[str], list[AdmissionRefused]]:
        admission = Admission(max_running=2, max_waiting=1, wait_timeout_s=5.0)
        release = asyncio.Event()
        done: list[str] = []
        refused: list[AdmissionRefused] = []

        async def request(name: str) -> None:
            try:
                async with admission.slot():
                    await release.wait()
                    done.append(name)
            except AdmissionRefused as exc:
                refused.append(exc)

        tasks = [asyncio.create_task(request(f"r{i}")) for i in range(5)]
        await asyncio.sleep(0.05)
        stats = admission.stats()
        assert (stats.running, stats.waiting) == (2, 1)
        assert len(refused) == 2 and all(r.status == 429 and r.retry_after_s >= 1 for r in refused)
        release.set()
        await asyncio.gather(*tasks)
        assert admission.stats().running == 0 and admission.stats().waiting == 0
        return done, refused

    done, refused = asyncio.run(scenario())
    assert sorted(done) == ["r0", "r1", "r2"]


def test_a_wait_that_runs_out_is_a_503() -> None:
    async def scenario() -> AdmissionRefused:
        admission = Admission(max_running=1, max_waiting=4, wait_timeout_s=0.05)
        async with admission.slot():
            with pytest.raises(AdmissionRefused) as info:
                async with admission.slot():
                    pass
        assert admission.stats().waiting == 0
        async with admission.slot():  # the slot is free again
            pass
        return info.value

    refused = asyncio.run(scenario())
    assert refused.status == 503 and "0.05 s" in str(refused)


def test_a_cancelled_waiter_gives_its_place_back() -> None:
    async def scenario() -> None:
        admission = Admission(max_running=1, max_waiting=1, wait_timeout_s=5.0)
        async with admission.slot():
            waiter = asyncio.create_task(admission.slot().__aenter__())
            await asyncio.sleep(0.01)
            assert admission.stats().waiting == 1
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            assert admission.stats().waiting == 0
        assert admission.stats().running == 0

    asyncio.run(scenario())
