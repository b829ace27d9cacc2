"""A request that runs past serve.request_timeout_s is ended like a disconnect: the client gets a
504 (or an SSE error event) and every worker frees the session.

Nothing here depends on the machine's speed: the deadline is far above what a short request takes
(measured and printed), and the requests that must run past it do so because the last stage is
slowed about fifty-fold on purpose (tests/stage_throttle.py) while they run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.api_cluster import ApiCluster, start_api_cluster, stop_api_cluster
from tests.cluster_harness import worker_processes
from tests.stage_throttle import throttled

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

DEADLINE_S = 20.0
LONG = {"messages": [{"role": "user", "content": "Write a very long essay about rivers."}], "max_tokens": 2000,
        "temperature": 0}


@pytest.fixture(scope="module")
def api(tmp_path_factory, smollm2_dir: Path):
    # Health checks with a long deadline: the throttled stage answers them, only late.
    cluster = start_api_cluster(tmp_path_factory.mktemp("deadline"), smollm2_dir,
                                serve={"request_timeout_s": DEADLINE_S, "context_length": 4096},
                                extra={"pipeline": {"health_timeout_s": 10.0}})
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


def last_stage(api: ApiCluster):
    (process,) = worker_processes([api.inventory.nodes[-1].port])
    return process


def drained(api: ApiCluster, within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while (counts := api.worker_sessions()) and any(counts) and time.monotonic() < deadline:
        time.sleep(0.05)
    return counts


def test_a_short_request_finishes_far_within_the_deadline(api: ApiCluster) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}
    started = time.monotonic()
    response = httpx.post(f"{api.base_url}/chat/completions", json=body, timeout=2 * DEADLINE_S)
    took = time.monotonic() - started
    print(f"\na 3-token request took {took:.2f} s against a {DEADLINE_S:g} s deadline")
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] <= 3


def test_non_streaming_request_past_its_deadline_gets_504(api: ApiCluster) -> None:
    with throttled(last_stage(api)):
        started = time.monotonic()
        response = httpx.post(f"{api.base_url}/chat/completions", json=LONG, timeout=4 * DEADLINE_S)
        took = time.monotonic() - started
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded" and "serve.request_timeout_s" in error["message"]
    assert DEADLINE_S <= took < DEADLINE_S + 10, f"the 504 came {took:.1f} s after the request, its deadline {DEADLINE_S:g} s"
    assert drained(api, 2.0) == [0, 0, 0]


def test_streaming_request_past_its_deadline_ends_with_an_error_event(api: ApiCluster) -> None:
    events: list[str] = []
    with httpx.stream("POST", f"{api.base_url}/chat/completions", json=LONG | {"stream": True},
                      timeout=4 * DEADLINE_S) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for line in lines:  # unthrottled until the first token, so tokens stream before the deadline
            if line.startswith("data: "):
                events.append(line[len("data: "):])
                if "choices" in json.loads(events[-1]):
                    break
        with throttled(last_stage(api)):
            events.extend(line[len("data: "):] for line in lines if line.startswith("data: "))
    errors = [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]
    assert errors and errors[0]["code"] == "deadline_exceeded", events[-3:]
    assert any("choices" in json.loads(e) for e in events if e != "[DONE]"), "tokens streamed before the deadline"
    assert drained(api, 2.0) == [0, 0, 0]
