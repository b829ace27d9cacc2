"""The Grafana dashboard and Prometheus config in dashboards/ are current and consistent."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.queries import dashboard_queries, expand

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"

HISTOGRAMS = {
    "boltpipe_worker_compute_seconds",
    "boltpipe_worker_queue_seconds",
    "boltpipe_worker_hop_seconds",
    "boltpipe_worker_batch_size",
    "boltpipe:time_to_first_token_seconds",
    "boltpipe:inter_token_latency_seconds",
    "boltpipe:e2e_request_latency_seconds",
    "boltpipe:request_queue_time_seconds",
    "boltpipe_coordinator_hop_seconds",
}
WORKER_SERIES = {
    "boltpipe_worker_steps_total",
    "boltpipe_worker_tokens_total",
    "boltpipe_worker_sampled_tokens_total",
    "boltpipe_worker_received_bytes_total",
    "boltpipe_worker_sent_bytes_total",
    "boltpipe_worker_errors_total",
    "boltpipe_worker_active_sessions",
    "boltpipe_worker_kv_cache_bytes",
    "boltpipe_worker_prefix_bytes",
    "boltpipe_worker_prefixes",
    "boltpipe_worker_resident_memory_bytes",
    "boltpipe_worker_memory_limit_bytes",
    "boltpipe_worker_usable_memory_bytes",
    "boltpipe_worker_layers",
    "boltpipe_worker_loaded",
    "boltpipe_worker_info",
}
COORDINATOR_SERIES = {
    "boltpipe:prompt_tokens_total",
    "boltpipe:generation_tokens_total",
    "boltpipe:request_success_total",
    "boltpipe_coordinator_request_failures_total",
    "boltpipe:num_requests_running",
    "boltpipe:num_requests_waiting",
    "boltpipe_coordinator_speculative_trips_total",
    "boltpipe_coordinator_drafted_tokens_total",
    "boltpipe_coordinator_accepted_tokens_total",
    "boltpipe_coordinator_prefix_hits_total",
    "boltpipe_coordinator_prefix_misses_total",
    "boltpipe_coordinator_prefix_tokens_reused_total",
}
# A histogram is only ever queried through the series Prometheus stores for it.
KNOWN = (
    WORKER_SERIES
    | COORDINATOR_SERIES
    | {f"{name}_{suffix}" for name in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
)
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}


def _dashboard() -> dict[str, Any]:
    return json.loads((DASHBOARDS / "boltpipe.json").read_text(encoding="utf-8"))


def _all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_all_panels(panel.get("panels") or []))
    return found


def _metric_names(expr: str) -> set[str]:
    """Identifiers in expr that are neither functions, keywords nor label names."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)  # range selectors
    stripped = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped)
    # Whole identifiers only (no backtracking into "rat" from "rate("), not followed by "(".
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()", stripped)
    return {name for name in names if name.lower() not in KEYWORDS}


def test_committed_dashboard_is_current():
    # Imported here so that the other tests run without the SDK (a `test` extra).
    from dashboards.generate import render

    assert (DASHBOARDS / "boltpipe.json").read_text(encoding="utf-8") == render(), (
        "dashboards/boltpipe.json is stale: run `python -m dashboards.generate` and commit"
    )


def test_every_panel_has_a_target():
    panels = [p for p in _all_panels(_dashboard()["panels"]) if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert all(t.get("expr") for t in panel["targets"]), panel["title"]


def test_panels_inside_collapsed_rows_are_listed():
    inner = {"type": "timeseries", "title": "inner", "targets": [{"expr": "boltpipe_worker_layers"}]}
    dashboard = {"panels": [{"type": "row", "title": "r", "collapsed": True, "panels": [inner]}]}
    assert dashboard_queries(dashboard) == [("inner", "boltpipe_worker_layers")]


def test_expressions_name_only_boltpipe_metrics():
    queries = dashboard_queries(_dashboard())
    used: set[str] = set()
    for title, expr in queries:
        names = _metric_names(expr)
        assert names, f"{title!r}: no metric in {expr!r}"
        assert names <= KNOWN, f"{title!r}: unknown metric {names - KNOWN} in {expr!r}"
        used |= names
    # The parser itself must see the names it should reject.
    assert _metric_names('rate(node_cpu_seconds_total{mode="idle"}[5m])') == {"node_cpu_seconds_total"}
    assert {"boltpipe_worker_compute_seconds_bucket", "boltpipe:e2e_request_latency_seconds_bucket"} <= used


def test_every_query_is_filtered_by_cluster_and_node():
    for title, expr in dashboard_queries(_dashboard()):
        if title.startswith("variable "):
            continue  # the variables are what choose cluster and node
        assert 'cluster=~"$cluster"' in expr, f"{title!r}: {expr!r}"
        if any(name.startswith("boltpipe_worker_") for name in _metric_names(expr)):
            assert 'node=~"$node"' in expr, f"{title!r}: {expr!r}"


def test_template_variables():
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["cluster"]["query"] == "label_values(boltpipe_worker_info, cluster)"
    assert variables["node"]["query"] == 'label_values(boltpipe_worker_info{cluster=~"$cluster"}, node)'
    assert variables["node"]["multi"] and variables["node"]["includeAll"]
    for name in ("cluster", "node"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    titles = {title for title, _ in dashboard_queries(_dashboard())}
    assert {"variable cluster", "variable node"} <= titles


def test_expand_leaves_no_variables():
    for title, expr in dashboard_queries(_dashboard()):
        assert "$" not in expand(expr), f"{title!r}: {expand(expr)!r}"
    assert expand('x{node=~"${node}"}[$__range]', node="a|b") == 'x{node=~"a|b"}[1h]'
    with pytest.raises(ValueError):
        expand("x[$__unknown]")


def test_prometheus_config_discovers_targets_from_files():
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["global"]["scrape_interval"] == "5s"
    assert config["global"]["evaluation_interval"] == "5s"
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "boltpipe"]
    (file_sd,) = job["file_sd_configs"]
    assert file_sd["files"] == ["targets/*.json"]
    assert file_sd["refresh_interval"] == "5s"


def test_decode_batch_panel_plots_the_mean_per_node():
    panels = {p["title"]: p for p in _all_panels(_dashboard()["panels"]) if p["type"] != "row"}
    panel = panels["Decode batch size per node: mean / p95"]
    targets = {t["legendFormat"]: t["expr"] for t in panel["targets"]}
    decode = 'phase="decode", cluster=~"$cluster", node=~"$node"'
    # The mean batch is the rate of the histogram's sum over the rate of its count, per node,
    # over decode passes only (prefill chunks are one session each and would pull it to 1).
    assert targets["{{node}} mean"] == (
        f"sum by (node) (rate(boltpipe_worker_batch_size_sum{{{decode}}}[$__rate_interval])) / "
        f"sum by (node) (rate(boltpipe_worker_batch_size_count{{{decode}}}[$__rate_interval]))"
    )
    assert targets["{{node}} p95"] == (
        "histogram_quantile(0.95, sum by (node, le) "
        f"(rate(boltpipe_worker_batch_size_bucket{{{decode}}}[$__rate_interval])))"
    )
    assert panel["fieldConfig"]["defaults"]["unit"] == "short"
    # Decode latency per node stays the compute histogram's (one observation per forward pass).
    latency = panels["Decode compute latency p50 / p95 / p99"]
    assert all("boltpipe_worker_compute_seconds_bucket" in t["expr"] for t in latency["targets"])
