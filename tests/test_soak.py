"""Soak, bounded and on loopback: requests from several clients while workers are killed at random
(the coordinator starts them again). Every request must end either complete and equal to mlx-lm's
greedy text, or with an explicit error; none may hang; afterwards no session is left on any worker
and no worker's memory has grown. Prints the tally.

Two sizes: the default (CI) runs 40 requests with a kill every 8 requests; `BOLTPIPE_SOAK=full`
runs the release profile, 200 requests with 12 kills. Kills are paced by requests started, not by
the clock, so a slow or loaded machine sees the same number of kills."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest

from tests.api_cluster import start_api_cluster, stop_api_cluster
from tests.cluster_harness import worker_processes
from tests.metrics_scrape import coordinator_total
from tests.reference import reference_text, tokenizer_for

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

MODEL = "smollm2-135m-instruct"
CLIENTS = 4
FULL = os.environ.get("BOLTPIPE_SOAK", "").lower() == "full"
REQUESTS = 200 if FULL else 40
KILL_EVERY = 16 if FULL else 8     # requests started between two kills
MAX_KILLS = 12 if FULL else 5
MAX_TOKENS = 6
HANG_S = 150.0        # a request still open after this counts as hung
PROMPTS = ["What is the capital of France?", "Name a primary color.", "What is 7 times 8?", "Who wrote Hamlet?",
           "Say hello in Spanish.", "What is the largest planet?"]


def _rss(ports: list[int]) -> dict[int, int]:
    return {p.pid: p.memory_info().rss for p in worker_processes(ports)}


def test_soak_with_workers_killed_at_random(tmp_path: Path, smollm2_dir: Path) -> None:
    tokenizer = tokenizer_for(smollm2_dir)
    expected = {p: reference_text(smollm2_dir, tokenizer.encode_chat([{"role": "user", "content": p}]), MAX_TOKENS)
                for p in PROMPTS}
    api = start_api_cluster(tmp_path, smollm2_dir, serve={"max_concurrent": CLIENTS, "context_length": 512,
                                                          "request_timeout_s": 120})
    ports = [n.port for n in api.inventory.nodes]
    tally: Counter[str] = Counter()
    wrong: list[str] = []
    lock = threading.Lock()
    started_requests = threading.Condition(lock)
    next_request = iter(range(REQUESTS))
    stop = threading.Event()
    try:
        client = openai.OpenAI(base_url=api.base_url, api_key="unused", timeout=HANG_S, max_retries=0)
        for prompt in PROMPTS:  # warm every worker before its memory is the baseline
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=MAX_TOKENS, temperature=0)
        baseline = max(_rss(ports).values())
        replays_before = coordinator_total(api, "boltpipe_coordinator_replays_total")

        def run_client(index: int) -> None:
            for n in next_request:
                with started_requests:
                    tally["started"] += 1
                    started_requests.notify_all()
                prompt = PROMPTS[(n + index) % len(PROMPTS)]
                try:
                    stream = client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS,
                        temperature=0, stream=bool(n % 2))
                    text = ("".join(c.choices[0].delta.content or "" for c in stream if c.choices) if n % 2
                            else stream.choices[0].message.content)
                    outcome = "completed" if text == expected[prompt] else "wrong"
                    if outcome == "wrong":
                        wrong.append(f"{prompt!r}: {text!r} != {expected[prompt]!r}")
                except openai.APITimeoutError:
                    outcome = "hung"
                except (openai.APIStatusError, openai.APIError):
                    outcome = "errored"  # an explicit error: a status code or an SSE error event
                with lock:
                    tally[outcome] += 1

        def chaos() -> None:
            rng = random.Random(7)
            kills = 0
            while kills < MAX_KILLS:
                with started_requests:
                    started_requests.wait_for(lambda: stop.is_set() or tally["started"] >= KILL_EVERY * (kills + 1))
                if stop.is_set():
                    return
                victims = worker_processes(ports)
                if not victims:  # all being started again: kill the next one that is back
                    stop.wait(0.2)
                    continue
                rng.choice(victims).send_signal(signal.SIGKILL)
                kills += 1
                with lock:
                    tally["workers killed"] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=run_client, args=(i,)) for i in range(CLIENTS)]
        killer = threading.Thread(target=chaos)
        for thread in threads + [killer]:
            thread.start()
        for thread in threads:
            thread.join(timeout=HANG_S * REQUESTS / CLIENTS)
        with started_requests:
            stop.set()
            started_requests.notify_all()
        killer.join()
        elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in threads), "a client never finished"
        tally["replayed"] = int(coordinator_total(api, "boltpipe_coordinator_replays_total") - replays_before)

        # Every worker serves again, holds no session, and has not grown.
        deadline = time.monotonic() + 120
        while httpx.get(f"{api.inventory.url}/health", timeout=5).json()["status"] != "ok":
            assert time.monotonic() < deadline, "the cluster did not recover"
            time.sleep(0.5)
        deadline = time.monotonic() + 15
        while any(api.worker_sessions()) and time.monotonic() < deadline:
            time.sleep(0.2)
        sessions = api.worker_sessions()
        after = _rss(ports)
        print(f"\nsoak: {REQUESTS} requests from {CLIENTS} clients in {elapsed:.0f} s: " +
              ", ".join(f"{k} {v}" for k, v in sorted(tally.items())) +
              f"; sessions left {sessions}; worker RSS {baseline / 1e6:.0f} MB before, "
              f"{max(after.values()) / 1e6:.0f} MB after (largest)")
        assert tally["started"] == REQUESTS
        assert tally["completed"] + tally["errored"] + tally["wrong"] + tally["hung"] == REQUESTS
        assert tally["hung"] == 0 and not wrong, wrong
        assert tally["workers killed"] == MAX_KILLS and tally["replayed"] >= 1
        assert tally["completed"] >= REQUESTS * 0.8
        assert sessions == [0, 0, 0]
        assert max(after.values()) < baseline * 1.25 + 50e6
    finally:
        with started_requests:
            stop.set()
            started_requests.notify_all()
        stop_api_cluster(api)
        for proc in worker_processes(ports):
            proc.kill()
