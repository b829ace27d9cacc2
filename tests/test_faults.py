"""A stage that dies or stalls under a streaming request, on a real 3-worker cluster through the
official `openai` client: without replay the client gets an error within seconds; with replay the
worker is started again (by the coordinator, which started it), its slice loaded again, and the
stream completes with exactly the text of an uninterrupted greedy run."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.api_cluster import ApiCluster, start_api_cluster, stop_api_cluster
from tests.cluster_harness import worker_processes
from tests.metrics_scrape import coordinator_total
from tests.reference import reference_text, tokenizer_for

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

MODEL = "smollm2-135m-instruct"
STORY = "Write a long story about a dragon and a knight."
MAX_TOKENS = 36  # past the last fault below (after 30 tokens)


def chat_reference(model_dir: Path, prompt: str, max_tokens: int) -> str:
    ids = tokenizer_for(model_dir).encode_chat([{"role": "user", "content": prompt}])
    return reference_text(model_dir, ids, max_tokens)


def worker(api: ApiCluster, name: str) -> psutil.Process:
    node = next(n for n in api.inventory.nodes if n.name == name)
    (proc,) = worker_processes([node.port])
    return proc


def wait_healthy(api: ApiCluster, within_s: float) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        body = httpx.get(f"{api.inventory.url}/health", timeout=5).json()
        if body["status"] == "ok" or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def stream_until(api: ApiCluster, prompt: str, max_tokens: int, after_tokens: int, fault) -> tuple[str, float | None, Exception | None]:
    """Streams a chat completion; calls `fault()` once `after_tokens` chunks arrived. Returns the
    text, when the fault happened (monotonic), and the error the stream ended with, if any."""
    client = openai.OpenAI(base_url=api.base_url, api_key="unused", timeout=180, max_retries=0)
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, stream=True)
    text, chunks, fault_at = [], 0, None
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
                chunks += 1
                if chunks == after_tokens and fault_at is None:
                    fault()
                    fault_at = time.monotonic()
    except openai.APIError as exc:
        return "".join(text), fault_at, exc
    return "".join(text), fault_at, None


@pytest.fixture(scope="module")
def no_replay(tmp_path_factory, smollm2_dir: Path):
    cluster = start_api_cluster(tmp_path_factory.mktemp("noreplay"), smollm2_dir,
                                serve={"max_concurrent": 2, "context_length": 1024, "replay": False})
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


@pytest.fixture(scope="module")
def with_replay(tmp_path_factory, smollm2_dir: Path):
    cluster = start_api_cluster(tmp_path_factory.mktemp("replay"), smollm2_dir,
                                serve={"max_concurrent": 2, "context_length": 1024})
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


def test_killed_worker_without_replay_ends_the_stream_with_an_error_fast(no_replay: ApiCluster, smollm2_dir: Path) -> None:
    victim = worker(no_replay, "w2")
    text, killed_at, error = stream_until(no_replay, STORY, MAX_TOKENS, 5, lambda: victim.send_signal(signal.SIGKILL))
    noticed_in = time.monotonic() - killed_at
    print(f"\nkilled w2: the client had its error {noticed_in:.2f} s later: {error}")
    assert error is not None and "stage 1 (w2)" in str(error), error
    assert noticed_in < 5.0
    assert chat_reference(smollm2_dir, STORY, MAX_TOKENS).startswith(text)  # what came before was right
    # The coordinator starts the worker again, loads its slice, and serves without anyone's help.
    health = wait_healthy(no_replay, within_s=120)
    assert health["status"] == "ok", health
    assert worker(no_replay, "w2").pid != victim.pid
    again, _, error = stream_until(no_replay, STORY, MAX_TOKENS, 10**6, lambda: None)
    assert error is None and again == chat_reference(smollm2_dir, STORY, MAX_TOKENS)


def test_stalled_worker_is_detected_and_serves_again_when_it_resumes(no_replay: ApiCluster) -> None:
    wait_healthy(no_replay, within_s=120)
    victim = worker(no_replay, "w3")
    try:
        text, stopped_at, error = stream_until(no_replay, STORY, MAX_TOKENS, 5, lambda: victim.send_signal(signal.SIGSTOP))
        noticed_in = time.monotonic() - stopped_at
        print(f"\nstopped w3 (SIGSTOP): the client had its error {noticed_in:.2f} s later: {error}")
        assert error is not None and "stage 2 (w3)" in str(error) and "health checks" in str(error), error
        # Two missed checks of 2 s each, 1 s apart, plus the check in progress.
        assert noticed_in < 8.0
        assert httpx.get(f"{no_replay.inventory.url}/health", timeout=5).json()["status"] == "degraded"
    finally:
        victim.send_signal(signal.SIGCONT)
    assert wait_healthy(no_replay, within_s=60)["status"] == "ok"
    assert worker(no_replay, "w3").pid == victim.pid  # the same process: it was only stalled


def test_killed_worker_with_replay_completes_with_the_uninterrupted_text(with_replay: ApiCluster, smollm2_dir: Path) -> None:
    expected = chat_reference(smollm2_dir, STORY, MAX_TOKENS)
    replays = coordinator_total(with_replay, "boltpipe_coordinator_replays_total")
    for name, after in (("w2", 8), ("w1", 20), ("w3", 30)):
        victim = worker(with_replay, name)
        text, _, error = stream_until(with_replay, STORY, MAX_TOKENS, after, lambda: victim.send_signal(signal.SIGKILL))
        assert error is None, (name, error)
        assert text == expected, name
        assert worker(with_replay, name).pid != victim.pid
        assert wait_healthy(with_replay, within_s=60)["status"] == "ok"
    assert coordinator_total(with_replay, "boltpipe_coordinator_replays_total") - replays == 3
    # Nothing of the interrupted sessions is left on any worker.
    deadline = time.monotonic() + 10
    while any(with_replay.worker_sessions()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert with_replay.worker_sessions() == [0, 0, 0]


def test_a_worker_restart_between_turns_costs_a_miss_not_a_wrong_answer(with_replay: ApiCluster,
                                                                        smollm2_dir: Path) -> None:
    """Prefix caching: the second turn would start from what the first left on the stages, but w2
    restarted in between and lost it; the turn still gets mlx-lm's answer to the whole conversation."""
    client = openai.OpenAI(base_url=with_replay.base_url, api_key="unused")
    tokenizer = tokenizer_for(smollm2_dir)
    messages = [{"role": "user", "content": "Name a large city in Japan."}]
    first = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, max_tokens=12,
                                           temperature=0).choices[0].message.content
    assert all(n > 0 for n in with_replay.worker_prefixes())
    victim = worker(with_replay, "w2")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert wait_healthy(with_replay, within_s=120)["status"] == "ok"
    assert with_replay.worker_prefixes()[1] == 0  # the new w2 keeps nothing
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "And another one?"}]
    second = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, max_tokens=12,
                                            temperature=0).choices[0].message.content
    assert second == reference_text(smollm2_dir, tokenizer.encode_chat(messages), 12)
