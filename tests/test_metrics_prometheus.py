"""Metrics of a real 3-worker cluster, scraped by a real Prometheus server while four clients stream
completions through the official `openai` client: per-node latency series for every node, every
dashboard expression answering with data, token counters equal to what was served, stage and hop
times adding up to the measured inter-token latency, and `cluster status` showing live figures."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from cluster.commands.live_metrics import Scrape, parse_scrape
from cluster.commands.status import CLEAR_SCREEN
from dashboards.queries import dashboard_queries, expand
from tests.api_cluster import ApiCluster, start_api_cluster, stop_api_cluster
from tests.cli_runner import cli_env, run_cli
from tests.prometheus_server import PrometheusServer, prometheus_available, scrape_config, start_prometheus
from tests.system_tools import require

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop


@pytest.fixture(scope="module", autouse=True)
def _prometheus_installed() -> None:
    require(prometheus_available())


REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 4
REQUESTS_PER_CLIENT = 2
MAX_TOKENS = 24
NODES = ("w1", "w2", "w3")
PROMPTS = ["Tell me about the moon.", "Write a short poem about rain.", "What is a prime number?",
           "Describe a forest in the morning."]


@pytest.fixture(scope="module")
def api(tmp_path_factory, smollm2_dir: Path):
    cluster = start_api_cluster(tmp_path_factory.mktemp("metrics"), smollm2_dir,
                                serve={"max_concurrent": CLIENTS, "context_length": 1024})
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


@pytest.fixture(scope="module")
def prometheus(api: ApiCluster, tmp_path_factory):
    # `cluster up` publishes the targets where boltpipe's own Prometheus configuration reads them.
    targets_dir = api.home / "prometheus" / "targets"
    assert list(targets_dir.glob("*.json")), "cluster up wrote no targets file"
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), scrape_config(targets_dir / "*.json"))
    try:
        yield server
    finally:
        server.stop()


def endpoints(api: ApiCluster) -> dict[str, str]:
    """node -> metrics URL, from the targets file `cluster up` wrote (the coordinator's included)."""
    entries = json.loads(next((api.home / "prometheus" / "targets").glob("*.json")).read_text())
    return {e["labels"]["node"]: f"http://{e['targets'][0]}/metrics" for e in entries}


def scrape_all(api: ApiCluster) -> dict[str, Scrape]:
    return {node: parse_scrape(httpx.get(url, timeout=10).text, time.monotonic())
            for node, url in endpoints(api).items()}


@dataclass
class LoadRun:
    before: dict[str, Scrape]
    after: dict[str, Scrape]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    ended_at: float = 0.0
    first_tokens: list[threading.Event] = field(default_factory=list)   # one per client
    status_read: threading.Event = field(default_factory=threading.Event)  # clients stream on until it is set
    started: int = 0
    status_json: dict = field(default_factory=dict)
    status_table: str = ""
    errors: list[str] = field(default_factory=list)


def _client_load(api: ApiCluster, index: int, run: LoadRun, lock: threading.Lock) -> None:
    client = openai.OpenAI(base_url=api.base_url, api_key="unused", timeout=300)
    # At least REQUESTS_PER_CLIENT each, and on until `cluster status` has read its live figures:
    # a status window never falls where no stream generates, however slow the machine.
    done = 0
    while done < REQUESTS_PER_CLIENT or not run.status_read.is_set():
        done += 1
        with lock:
            run.started += 1
        try:
            stream = client.chat.completions.create(
                model="smollm2-135m-instruct", messages=[{"role": "user", "content": PROMPTS[index]}],
                max_tokens=MAX_TOKENS, temperature=0, stream=True, stream_options={"include_usage": True})
            usage = None
            for chunk in stream:
                usage = chunk.usage or usage
                if chunk.choices and chunk.choices[0].delta.content:
                    run.first_tokens[index].set()
            with lock:
                run.prompt_tokens += usage.prompt_tokens
                run.completion_tokens += usage.completion_tokens
                run.requests += 1
        except Exception as exc:  # reported by the test, not lost in a thread
            with lock:
                run.errors.append(repr(exc))


def _lone_speculative_request(api: ApiCluster, run: LoadRun) -> None:
    """A stream alone that copies its prompt: it speculates, so the drafting series have data."""
    client = openai.OpenAI(base_url=api.base_url, api_key="unused", timeout=300)
    passage = "The quick brown fox jumps over the lazy dog near the old stone bridge by the river."
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": f"Repeat exactly: {passage}"}],
        max_tokens=24, temperature=0)
    run.prompt_tokens += reply.usage.prompt_tokens
    run.completion_tokens += reply.usage.completion_tokens
    run.requests += 1
    run.started += 1


@pytest.fixture(scope="module")
def load(api: ApiCluster, prometheus: PrometheusServer) -> LoadRun:
    """Four clients at once, with `cluster status` read while they stream."""
    # A first scrape of every target before the load, so rate() has a start.
    prometheus.wait_scraped_since(time.time(), expected_targets=len(NODES) + 1)
    run = LoadRun(before=scrape_all(api), after={}, first_tokens=[threading.Event() for _ in range(CLIENTS)])
    lock = threading.Lock()
    _lone_speculative_request(api, run)
    clients = [threading.Thread(target=_client_load, args=(api, i, run, lock)) for i in range(CLIENTS)]
    for thread in clients:
        thread.start()
    try:
        for first_token in run.first_tokens:  # every stream past its prompt
            assert first_token.wait(timeout=300), f"a client had no token: {run.errors}"
        # Both readings at once, right away: their windows fall while every stream decodes.
        with ThreadPoolExecutor(2) as pool:
            status, table = pool.map(lambda extra: run_cli(["status", str(api.inventory_path), "--interval", "3",
                                                            *extra], api.home, timeout=120), (["--json"], []))
        assert status.returncode == 0, status.stdout + status.stderr
        run.status_json = json.loads(status.stdout)
        run.status_table = table.stdout
    finally:
        run.status_read.set()
    for thread in clients:
        thread.join(timeout=600)
    run.ended_at = time.time()
    run.after = scrape_all(api)
    print(f"\n`cluster status` during a {CLIENTS}-client load:\n{run.status_table}")
    # Prometheus scrapes once more after the last token.
    prometheus.wait_scraped_since(run.ended_at, expected_targets=len(NODES) + 1)
    return run


def test_prometheus_scrapes_every_node_and_the_coordinator(prometheus: PrometheusServer, load: LoadRun) -> None:
    assert not load.errors and load.requests == load.started >= CLIENTS * REQUESTS_PER_CLIENT
    health = {t["labels"]["node"]: t["health"] for t in prometheus.targets()}
    assert health == {"w1": "up", "w2": "up", "w3": "up", "coordinator": "up"}, health


def test_per_node_latency_series_for_every_node(prometheus: PrometheusServer, load: LoadRun) -> None:
    for family in ("compute", "queue", "hop"):
        expr = (f'histogram_quantile(0.5, sum by (node, le) '
                f'(rate(boltpipe_worker_{family}_seconds_bucket{{phase="decode"}}[1m])))')
        series = {r["metric"]["node"]: float(r["value"][1]) for r in prometheus.query(expr, at=load.ended_at)}
        assert sorted(series) == list(NODES), (family, series)
        assert all(value >= 0 for value in series.values()), (family, series)
    compute = prometheus.query('sum by (node, stage, cluster) (boltpipe_worker_compute_seconds_count{phase="decode"})',
                               at=load.ended_at)
    assert {(r["metric"]["node"], r["metric"]["stage"], r["metric"]["cluster"]) for r in compute} == {
        ("w1", "0", "api"), ("w2", "1", "api"), ("w3", "2", "api")}
    assert all(float(r["value"][1]) > 0 for r in compute)


def test_every_dashboard_expression_returns_data(prometheus: PrometheusServer, load: LoadRun) -> None:
    dashboard = json.loads((REPO_ROOT / "dashboards" / "boltpipe.json").read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 15
    empty = []
    for title, expr in queries:
        runnable = expand(expr, cluster="api", node=".+", rate_interval="1m", interval="1m", range_="5m")
        if not prometheus.query(runnable, at=load.ended_at):
            empty.append(f"{title}: {runnable}")
    assert not empty, "expressions without data:\n" + "\n".join(empty)


def _increase(load: LoadRun, node: str, name: str, **match: str) -> float:
    return load.after[node].total(name, **match) - load.before[node].total(name, **match)


def test_token_counters_equal_the_tokens_served(prometheus: PrometheusServer, load: LoadRun) -> None:
    assert _increase(load, "coordinator", "boltpipe:generation_tokens_total") == load.completion_tokens
    assert _increase(load, "coordinator", "boltpipe:prompt_tokens_total") == load.prompt_tokens
    assert _increase(load, "coordinator", "boltpipe:request_success_total", finished_reason="length") + \
        _increase(load, "coordinator", "boltpipe:request_success_total", finished_reason="stop") == load.requests
    # Every stage computes each prompt token and each generated token but the last (never fed back),
    # less the prompt positions a kept prefix already held, plus the drafted positions it rejected.
    reused = _increase(load, "coordinator", "boltpipe_coordinator_prefix_tokens_reused_total")
    rejected = sum(_increase(load, "coordinator", f"boltpipe_coordinator_{kind}_tokens_total", drafter="prompt_lookup")
                   * sign for kind, sign in (("drafted", 1), ("accepted", -1)))
    positions = load.prompt_tokens + load.completion_tokens - load.requests - reused + rejected
    for node in NODES:
        assert _increase(load, node, "boltpipe_worker_tokens_total") == positions, node
    assert _increase(load, "w3", "boltpipe_worker_sampled_tokens_total") == load.completion_tokens
    assert _increase(load, "w1", "boltpipe_worker_sampled_tokens_total") == 0
    # Prometheus holds the same totals as the endpoints.
    stored = prometheus.query('sum(boltpipe:generation_tokens_total{cluster="api"})', at=time.time())
    assert float(stored[0]["value"][1]) == load.after["coordinator"].total("boltpipe:generation_tokens_total")


def test_status_shows_live_figures_per_node(load: LoadRun) -> None:
    rows = {r["node"]: r for r in load.status_json["nodes"]}
    assert sorted(rows) == list(NODES)
    for node, row in rows.items():
        live = row["live"]
        assert row["state"] == "serving" and live is not None, node
        assert live["steps"] > 0 and live["tokens_per_s"] > 0, (node, live)
        assert 0 < live["decode_p50_ms"] <= live["decode_p95_ms"], (node, live)
        # Four streams decoding: a mean of 1 to 4 sessions per decode pass, and the table shows it.
        assert live["passes"] > 0 and 1.0 <= live["batch_mean"] <= CLIENTS, (node, live)
        assert row["batch"] == live["batch_mean"], (node, row)
    coordinator = load.status_json["coordinator"]
    assert coordinator["running"] >= 1 and coordinator["generated_per_s"] > 0
    for node in NODES:
        assert any(line.startswith(node) and " ms" in line for line in load.status_table.splitlines()), \
            load.status_table


def test_every_step_is_a_row_of_one_forward_pass(load: LoadRun) -> None:
    """Per node: the batch sizes of its passes add up to its steps, and each pass is timed once."""
    for node in NODES:
        steps = _increase(load, node, "boltpipe_worker_steps_total")
        passes = _increase(load, node, "boltpipe_worker_batch_size_count")
        assert steps > 0 and _increase(load, node, "boltpipe_worker_batch_size_sum") == steps, node
        assert 0 < passes <= steps and _increase(load, node, "boltpipe_worker_compute_seconds_count") == passes, node
        assert _increase(load, node, "boltpipe_worker_batch_size_sum", phase="prefill") == \
            _increase(load, node, "boltpipe_worker_batch_size_count", phase="prefill"), node  # one session each


def _mean(before: Scrape, after: Scrape, histogram: str, **match: str) -> float:
    count = after.total(f"{histogram}_count", **match) - before.total(f"{histogram}_count", **match)
    total = after.total(f"{histogram}_sum", **match) - before.total(f"{histogram}_sum", **match)
    assert count > 0, histogram
    return total / count


def test_stage_and_hop_times_add_up_to_the_inter_token_latency(api: ApiCluster, load: LoadRun) -> None:
    """One stream alone: the decode steps' hops, queueing and compute on every stage plus the hop
    back to the coordinator make up the time between tokens the client sees."""
    client = openai.OpenAI(base_url=api.base_url, api_key="unused", timeout=300)
    before = scrape_all(api)
    arrivals: list[tuple[float, int]] = []  # (time, tokens in the chunk)
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Write a long story about a dragon and a knight."}],
        max_tokens=32, temperature=0, stream=True, logprobs=True, stream_options={"include_usage": True},
        extra_body={"speculation": False})  # one token per trip: each arrival is one step's time
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        choice = chunk.choices[0] if chunk.choices else None
        if choice is not None and choice.logprobs is not None and choice.logprobs.content:
            arrivals.append((time.monotonic(), len(choice.logprobs.content)))
    after = scrape_all(api)
    tokens_after_first = sum(n for _, n in arrivals[1:])
    assert tokens_after_first >= 16
    client_itl = (arrivals[-1][0] - arrivals[0][0]) / tokens_after_first
    parts = {node: {family: _mean(before[node], after[node], f"boltpipe_worker_{family}_seconds", phase="decode")
                    for family in ("hop", "queue", "compute")} for node in NODES}
    back = _mean(before["coordinator"], after["coordinator"], "boltpipe_coordinator_hop_seconds", phase="decode")
    pipeline = sum(sum(p.values()) for p in parts.values()) + back
    coordinator_itl = _mean(before["coordinator"], after["coordinator"], "boltpipe:inter_token_latency_seconds")
    print(f"\nclient ITL {client_itl * 1e3:.1f} ms; coordinator ITL {coordinator_itl * 1e3:.1f} ms; stages + hops "
          f"{pipeline * 1e3:.1f} ms = " + " + ".join(
              f"{n}(hop {p['hop'] * 1e3:.2f}, queue {p['queue'] * 1e3:.2f}, compute {p['compute'] * 1e3:.1f})"
              for n, p in parts.items()) + f" + back {back * 1e3:.2f}")
    assert coordinator_itl == pytest.approx(client_itl, rel=0.1, abs=0.002)
    assert pipeline == pytest.approx(client_itl, rel=0.15, abs=0.002)
    for node in NODES:
        assert after[node].total("boltpipe_worker_tokens_total", phase="decode") - \
            before[node].total("boltpipe_worker_tokens_total", phase="decode") == usage.completion_tokens - 1


def test_status_watch_redraws_in_place(api: ApiCluster, load: LoadRun) -> None:
    primary, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "cluster", "status", str(api.inventory_path), "--watch",
                                "--interval", "1"], env=cli_env(api.home), stdout=secondary, stderr=secondary,
                               stdin=subprocess.DEVNULL, cwd=api.home.parent)
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        while screen.count(CLEAR_SCREEN.encode()) < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                try:
                    screen += os.read(primary, 65536)
                except OSError:
                    break
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)
    text = screen.decode(errors="replace")
    assert text.count(CLEAR_SCREEN) >= 3, text[-2000:]
    # The frame after the last clear may still be arriving when reading stops: judge the last whole one.
    last = text.split(CLEAR_SCREEN)[-2]
    assert all(any(line.startswith(n) and "serving" in line for line in last.splitlines()) for n in NODES), last
