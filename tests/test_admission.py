"""Admission limits from the KV budget, and the queue's fast refusals."""

from __future__ import annotations

import asyncio

import pytest

from cluster.api.admission import Admission, AdmissionRefused
from cluster.planning.kv_budget import session_limit


def test_session_limit_follows_the_largest_stage() -> None:
    per_session = 10 * 384 * 4 * 1000       # 10 layers x 384 elements per token, float32, 1000 tokens
    budget = per_session * 5 + 1
    assert session_limit([per_session] * 3, kv_budget_bytes=budget, configured_max=64) == 5
    assert session_limit([per_session, per_session, per_session * 12 // 10], kv_budget_bytes=budget,
                         configured_max=64) == 4
    assert session_limit([per_session] * 3, kv_budget_bytes=budget, configured_max=3) == 3
    assert session_limit([per_session * 1000], kv_budget_bytes=budget, configured_max=8) == 0


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
