"""A request that runs past serve.request_timeout_s is ended like a disconnect: the client
gets a 504 (or an SSE error event) and every worker frees the session."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.api_cluster import ApiCluster, start_api_cluster, stop_api_cluster

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

DEADLINE_S = 5.0  # prefill of a short chat prompt takes ~2 s on a small CPU
LONG = {"messages": [{"role": "user", "content": "Write a very long essay about rivers."}], "max_tokens": 2000,
        "temperature": 0}


@pytest.fixture(scope="module")
def api(tmp_path_factory, smollm2_dir: Path):
    cluster = start_api_cluster(tmp_path_factory.mktemp("deadline"), smollm2_dir,
                                serve={"request_timeout_s": DEADLINE_S, "context_length": 4096})
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


def drained(api: ApiCluster, within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while (counts := api.worker_sessions()) and any(counts) and time.monotonic() < deadline:
        time.sleep(0.05)
    return counts


def test_non_streaming_request_past_its_deadline_gets_504(api: ApiCluster) -> None:
    started = time.monotonic()
    response = httpx.post(f"{api.base_url}/chat/completions", json=LONG, timeout=60)
    took = time.monotonic() - started
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded" and "serve.request_timeout_s" in error["message"]
    assert took < DEADLINE_S + 10, f"the 504 came {took:.1f} s after a {DEADLINE_S} s deadline"
    assert drained(api, 2.0) == [0, 0, 0]


def test_streaming_request_past_its_deadline_ends_with_an_error_event(api: ApiCluster) -> None:
    events = []
    with httpx.stream("POST", f"{api.base_url}/chat/completions", json=LONG | {"stream": True}, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
    errors = [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]
    assert errors and errors[0]["code"] == "deadline_exceeded", events[-3:]
    assert any("choices" in json.loads(e) for e in events if e != "[DONE]"), "tokens streamed before the deadline"
    assert drained(api, 2.0) == [0, 0, 0]


def test_a_short_request_still_finishes_within_the_deadline(api: ApiCluster) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}
    response = httpx.post(f"{api.base_url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] <= 3
