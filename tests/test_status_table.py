"""`cluster status`'s rows, table and JSON from a worker's NodeInfo and two scrapes of its metrics,
without sockets: the mean decode batch per node (live from the batch histogram, else what the
worker last reported) beside the other live figures."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import generate_latest

from cluster.commands import status
from cluster.commands.live_metrics import Scrape, parse_scrape
from cluster.inventory import NodeSpec
from node.worker_metrics import WorkerMetrics
from proto import boltpipe_pb2 as pb

MS = 1_000_000


def _info(recent_batch_size: float = 0.0) -> pb.NodeInfo:
    return pb.NodeInfo(loaded=True, slice=pb.SliceSpec(layer_start=0, layer_end=15, backend="mlx"),
                       active_sessions=4, rss_bytes=1 << 30, usable_memory_bytes=8 << 30,
                       recent_step_ms=12.0, recent_batch_size=recent_batch_size)


def _row(monkeypatch, info: pb.NodeInfo, name: str = "w1") -> dict:
    async def fake_node_info(inventory, spec):
        return info

    monkeypatch.setattr(status, "node_info", fake_node_info)
    spec = NodeSpec(name=name, host="127.0.0.1", port=50051)
    return asyncio.run(status.node_row(None, spec))


def _passes(metrics: WorkerMetrics, batches: list[int]) -> None:
    for rows in batches:
        for index in range(rows):
            step = pb.Step(session_id=f"s{index}", token_ids=[7], decode=True)
            timing = pb.StageTiming(recv_ns=0, compute_start_ns=MS, compute_end_ns=13 * MS)
            metrics.computed(step, timing, sampled=False)
        metrics.forward_pass(rows, "decode", 0.012)


def _scrapes(batches: list[int]) -> tuple[Scrape, Scrape]:
    """A reading of a worker before and after decode passes of `batches` sessions each."""
    metrics = WorkerMetrics("w1")
    metrics.set_stage(0)
    _passes(metrics, [1] * 10)  # before the window: must not dilute its mean
    before = parse_scrape(generate_latest(metrics.registry).decode(), at_s=0.0)
    _passes(metrics, batches)
    return before, parse_scrape(generate_latest(metrics.registry).decode(), at_s=2.0)


def _column(table: str, node: str, header: str) -> str:
    """The cell under `header` in `node`'s line (cells are two or more spaces apart)."""
    lines = table.splitlines()
    start = lines[0].index(header)
    line = next(line for line in lines if line.startswith(node + " "))
    return line[start:].split("  ")[0].strip()


def test_row_carries_the_workers_recent_batch(monkeypatch) -> None:
    row = _row(monkeypatch, _info(recent_batch_size=2.5))
    assert row["recent_batch"] == 2.5 and row["batch"] == 2.5
    row = _row(monkeypatch, _info())  # a worker that has made no decode pass yet
    assert row["recent_batch"] is None and row["batch"] is None


def test_table_and_json_show_the_live_mean_batch(monkeypatch) -> None:
    rows = [_row(monkeypatch, _info(recent_batch_size=1.0))]
    before, after = _scrapes([4, 4, 4, 2])  # 14 sessions' steps in 4 passes
    status.with_figures(rows, {"w1": before}, {"w1": after})
    (row,) = rows
    # The window's mean, not the worker's own recent figure (1.0).
    assert row["live"]["batch_mean"] == 3.5 and row["batch"] == 3.5
    assert row["live"]["steps"] == 14 and row["live"]["passes"] == 4
    table = status.render(rows, None, "API: not running", 2.0)
    assert "batch" in table.splitlines()[0].split()
    assert _column(table, "w1", "batch") == "3.5"
    assert _column(table, "w1", "decode p50").endswith(" ms")
    assert json.loads(json.dumps(rows))[0]["batch"] == 3.5


def test_an_idle_window_falls_back_to_the_workers_figure(monkeypatch) -> None:
    rows = [_row(monkeypatch, _info(recent_batch_size=3.0)), _row(monkeypatch, _info(), name="w2")]
    before, after = _scrapes([])
    status.with_figures(rows, {"w1": before, "w2": before}, {"w1": after, "w2": after})
    assert rows[0]["live"]["batch_mean"] is None and rows[0]["batch"] == 3.0
    assert rows[1]["batch"] is None
    table = status.render(rows, None, "API: not running", 2.0)
    assert _column(table, "w1", "batch") == "3.0"
    assert _column(table, "w1", "decode p50") == "idle"
    assert _column(table, "w2", "batch") == "-"


def test_json_report_has_the_batch_per_node(monkeypatch, capsys) -> None:
    before, after = _scrapes([2, 2, 4])
    readings = iter([{"w1": before, "": None}, {"w1": after, "": None}])
    row = _row(monkeypatch, _info(recent_batch_size=1.5))

    async def fake_rows(inventory):
        return [dict(row)]

    async def fake_scrape_all(session, urls):
        return next(readings)

    monkeypatch.setattr(status, "status_rows", fake_rows)
    monkeypatch.setattr(status, "scrape_all", fake_scrape_all)
    monkeypatch.setattr(status, "run_dir_for", lambda inventory: None)
    monkeypatch.setattr(status, "live_state", lambda run_dir: None)
    assert asyncio.run(status._report(None, 0.01, watch=False, as_json=True)) == 0
    (node,) = json.loads(capsys.readouterr().out)["nodes"]
    assert node["batch"] == node["live"]["batch_mean"] == round(8 / 3, 2)
    assert node["recent_batch"] == 1.5


def test_the_coordinator_line_shows_speculation_from_its_counters() -> None:
    from dataclasses import asdict

    from cluster.api.admission import Admission
    from cluster.api.coordinator_metrics import CoordinatorMetrics
    from cluster.commands.live_metrics import coordinator_figures

    metrics = CoordinatorMetrics("demo", Admission(4, 8, 30.0))
    read = lambda at: parse_scrape(generate_latest(metrics.registry).decode(), at_s=at)  # noqa: E731
    assert coordinator_figures(read(0.0), read(2.0)).acceptance is None  # nothing drafted yet
    for drafted, kept in ((4, 4), (4, 2), (2, 0)):
        metrics.speculated("prompt_lookup", drafted, kept)
    figures = coordinator_figures(read(0.0), read(2.0))
    assert (figures.speculative_trips, figures.acceptance, figures.tokens_per_trip) == (3, 0.6, 3.0)
    text = status.render([], asdict(figures), "api: up", 2.0)
    assert "speculation: 3 trips with drafts, 60% of drafts kept, 3.00 tokens per such trip" in text


def test_the_coordinator_line_shows_the_prefix_cache() -> None:
    from dataclasses import asdict

    from cluster.api.admission import Admission
    from cluster.api.coordinator_metrics import CoordinatorMetrics
    from cluster.commands.live_metrics import coordinator_figures
    from cluster.pipeline.prefix_cache import PrefixCache

    metrics = CoordinatorMetrics("demo", Admission(4, 8, 30.0))
    cache = PrefixCache(10_000, 10, exact_only=False)
    metrics.watch_prefix_cache(cache)
    cache.keep("s1", list(range(40)))
    cache.start(list(range(50))), cache.start([7, 7, 7])
    read = lambda at: parse_scrape(generate_latest(metrics.registry).decode(), at_s=at)  # noqa: E731
    figures = coordinator_figures(read(0.0), read(2.0))
    assert (figures.prefix_hits, figures.prefix_misses, figures.prefix_tokens_reused, figures.prefix_entries) == \
        (1, 1, 40, 1)
    text = status.render([], asdict(figures), "api: up", 2.0)
    assert "prefix cache: 1 hits, 1 misses, 40 prompt positions reused, 1 prefixes kept" in text


def test_rows_carry_each_workers_kept_prefix_bytes(monkeypatch) -> None:
    info = _info()
    info.prefix_bytes = 25_800_000
    rows = [_row(monkeypatch, info, "w1"), _row(monkeypatch, _info(), "w2")]
    assert [r["prefix_bytes"] for r in rows] == [25_800_000, 0]
    assert "kept prefixes: w1 25.8 MB, w2 0 B" in status.render(rows, None, "api: up", 2.0)
    assert "kept prefixes" not in status.render(rows[1:], None, "api: up", 2.0)
