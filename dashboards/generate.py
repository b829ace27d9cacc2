"""Build the "boltpipe — per-node latency" Grafana dashboard into dashboards/boltpipe.json.

    python -m dashboards.generate           rewrite the JSON
    python -m dashboards.generate --check   exit 1 if the committed JSON is stale
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import common
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prom_models

DASHBOARD_PATH = Path(__file__).with_name("boltpipe.json")
TITLE = "boltpipe — per-node latency"
UID = "boltpipe-per-node-latency"

# Every panel and variable queries whichever Prometheus the `datasource` variable names.
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
CLUSTER = 'cluster=~"$cluster"'
WORKER = f'{CLUSTER}, node=~"$node"'
RATE = "[$__rate_interval]"

TOKENS_PER_S = "suffix: tokens/s"  # Grafana's documented form of a custom unit
PER_S = "suffix: /s"

Query = tuple[str, str]  # (PromQL, legend)


def _selector(*matchers: str) -> str:
    return "{" + ", ".join(matchers) + "}"


def _quantiles(
    metric: str, matchers: str, by: str, quantiles: tuple[float, ...], legend: str
) -> list[Query]:
    """histogram_quantile over a bucket rate, one query per quantile; legend gets ' p50' etc."""
    group = f"{by}, le" if by else "le"
    rate = f"rate({metric}_bucket{{{matchers}}}{RATE})"
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) ({rate}))",
            f"{legend} p{round(q * 100)}".strip(),
        )
        for q in quantiles
    ]


def _sum_rate(metric: str, matchers: str, by: str = "") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({metric}{{{matchers}}}{RATE}))"


def _targets(
    queries: list[Query], instant_table: bool = False
) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    targets: list[cogbuilder.Builder[cogvariants.Dataquery]] = []
    for index, (expr, legend) in enumerate(queries):
        # Grafana would name them A, B, ... on load; naming them here keeps the JSON stable.
        target = prom.Dataquery().expr(expr).ref_id(chr(ord("A") + index)).datasource(DATASOURCE)
        if instant_table:
            targets.append(target.instant().format(prom_models.PromQueryFormat.TABLE))
        else:
            targets.append(target.range().legend_format(legend))
    return targets


def _timeseries(
    title: str, unit: str, queries: list[Query], description: str, width: int = 12
) -> timeseries.Panel:
    legend = (
        common.VizLegendOptions()
        .display_mode(common_models.LegendDisplayMode.TABLE)
        .placement(common_models.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["mean", "max", "lastNotNull"])
    )
    tooltip = (
        common.VizTooltipOptions()
        .mode(common_models.TooltipDisplayMode.MULTI)
        .sort(common_models.SortOrder.DESCENDING)
    )
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .targets(_targets(queries))
        .legend(legend)
        .tooltip(tooltip)
        .span(width)
        .height(8)
    )


def _nodes_table() -> table.Panel:
    info = f"boltpipe_worker_info{_selector(WORKER)}"
    layers = f"boltpipe_worker_layers{_selector(WORKER)}"
    hidden = ["Time", "__name__", "Value #A", "cluster", "instance", "job", "role"]
    organize = {
        "excludeByName": {name: True for name in hidden},
        "indexByName": {
            name: index
            for index, name in enumerate(
                ["node", "stage", "backend", "layer_start", "layer_end", "Value #B", "version", "machine"]
            )
        },
        "renameByName": {"Value #B": "layers"},
    }
    return (
        table.Panel()
        .title("Nodes")
        .description("One row per worker: its pipeline stage, backend and the slice of layers it holds.")
        .datasource(DATASOURCE)
        .targets(_targets([(info, ""), (layers, "")], instant_table=True))
        # Join the two instant queries on their shared labels (node, stage, ...).
        .with_transformation(models.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(models.DataTransformerConfig(id_val="organize", options=organize))
        .span(24)
        .height(7)
    )


def _latency_panels() -> list[timeseries.Panel]:
    def compute(phase: str) -> list[Query]:
        matchers = f'phase="{phase}", {WORKER}'
        return _quantiles(
            "boltpipe_worker_compute_seconds", matchers, "node", (0.5, 0.95, 0.99), "{{node}}"
        )

    queue = _quantiles(
        "boltpipe_worker_queue_seconds", WORKER, "node, phase", (0.95,), "{{node}} {{phase}}"
    )
    return [
        _timeseries(
            "Decode compute latency p50 / p95 / p99",
            "s",
            compute("decode"),
            "Time of one decode forward pass through each worker's layers, however many sessions it "
            "batches: the per-token latency each of those sessions sees at that node.",
        ),
        _timeseries(
            "Prefill compute latency p50 / p95 / p99",
            "s",
            compute("prefill"),
            "Time of one prefill forward pass (a prompt chunk) through each worker's layers.",
        ),
        _timeseries(
            "Queue time p95 per node",
            "s",
            queue,
            "How long a step waits in a worker's queue before its compute starts.",
        ),
        _batch_panel(),
    ]


def mean_decode_batch() -> str:
    """Sessions per decode forward pass on each node: rate of the histogram's sum over its count."""
    matchers = f'phase="decode", {WORKER}'
    return (
        f"{_sum_rate('boltpipe_worker_batch_size_sum', matchers, 'node')} / "
        f"{_sum_rate('boltpipe_worker_batch_size_count', matchers, 'node')}"
    )


def _batch_panel() -> timeseries.Panel:
    p95 = _quantiles(
        "boltpipe_worker_batch_size", 'phase="decode", ' + WORKER, "node", (0.95,), "{{node}}"
    )
    return _timeseries(
        "Decode batch size per node: mean / p95",
        "short",
        [(mean_decode_batch(), "{{node}} mean"), *p95],
        "Sessions each worker computes together in one decode forward pass (prefill chunks are "
        "one session each).",
    )


def _hop_panel(phase: str) -> timeseries.Panel:
    into_node = _quantiles(
        "boltpipe_worker_hop_seconds",
        f'phase="{phase}", {WORKER}',
        "node, stage",
        (0.5, 0.95),
        "→ {{node}} (stage {{stage}})",
    )
    back_home = _quantiles(
        "boltpipe_coordinator_hop_seconds",
        f'phase="{phase}", {CLUSTER}',
        "",
        (0.5, 0.95),
        "last stage → coordinator",
    )
    return _timeseries(
        f"Per-hop latency p50 / p95 ({phase})",
        "s",
        into_node + back_home,
        "Network hop into each node from the previous stage (from the coordinator for stage 0), "
        "and the return hop from the last stage to the coordinator.",
        width=8,
    )


def _network_panel() -> timeseries.Panel:
    queries = [
        (_sum_rate(f"boltpipe_worker_{way}_bytes_total", WORKER, "node"), "{{node}} " + way)
        for way in ("received", "sent")
    ]
    description = "Activation bytes each worker receives and sends."
    return _timeseries("Network bytes/s per node", "Bps", queries, description, width=8)


def _throughput_panels() -> list[timeseries.Panel]:
    # By phase too: prefill tokens (prompt) and decode tokens cost very differently.
    per_node = [(_sum_rate("boltpipe_worker_tokens_total", WORKER, "node, phase"), "{{node}} {{phase}}")]
    cluster = [
        (_sum_rate("boltpipe:generation_tokens_total", CLUSTER), "generated"),
        (_sum_rate("boltpipe:prompt_tokens_total", CLUSTER), "prompt"),
    ]
    return [
        _timeseries(
            "Tokens/s per node", TOKENS_PER_S, per_node, "Tokens each worker pushes through its layers."
        ),
        _timeseries(
            "Cluster tokens/s",
            TOKENS_PER_S,
            cluster,
            "Tokens generated for, and prompt tokens read from, clients.",
        ),
    ]


def _request_panels() -> list[timeseries.Panel]:
    def coordinator(name: str, quantiles: tuple[float, ...]) -> list[Query]:
        return _quantiles(f"boltpipe:{name}", CLUSTER, "model_name", quantiles, "{{model_name}}")

    return [
        _timeseries(
            "Time to first token p50 / p95",
            "s",
            coordinator("time_to_first_token_seconds", (0.5, 0.95)),
            "From a request's arrival to its first generated token.",
        ),
        _timeseries(
            "Inter-token latency p50 / p95",
            "s",
            coordinator("inter_token_latency_seconds", (0.5, 0.95)),
            "Time between consecutive tokens of one stream.",
        ),
        _timeseries(
            "End-to-end request latency p50 / p95",
            "s",
            coordinator("e2e_request_latency_seconds", (0.5, 0.95)),
            "From a request's arrival to its last token.",
        ),
        _timeseries(
            "Request queue time p95",
            "s",
            coordinator("request_queue_time_seconds", (0.95,)),
            "How long requests wait for admission at the coordinator.",
        ),
        _speculation_panel(),
        _prefix_cache_panel(),
    ]


def _prefix_cache_panel() -> timeseries.Panel:
    hits = _sum_rate("boltpipe_coordinator_prefix_hits_total", CLUSTER)
    misses = _sum_rate("boltpipe_coordinator_prefix_misses_total", CLUSTER)
    reused = _sum_rate("boltpipe_coordinator_prefix_tokens_reused_total", CLUSTER)
    return _timeseries(
        "Prefix cache: hit share / prompt positions reused per second",
        "short",
        [(f"{hits} / ({hits} + {misses})", "hit share"), (reused, "positions reused / s")],
        "Requests that started from a prefix an earlier request left on the workers, and the prompt "
        "positions they did not compute again.",
    )


def _prefix_bytes_panel() -> timeseries.Panel:
    held = [(f"sum by (node) (boltpipe_worker_prefix_bytes{{{WORKER}}})", "{{node}}")]
    return _timeseries("Kept prefix bytes per node", "bytes", held,
                       "KV cache a worker keeps as prefixes for later requests (part of its KV bytes).")


def _speculation_panel() -> timeseries.Panel:
    kept = _sum_rate("boltpipe_coordinator_accepted_tokens_total", CLUSTER, "drafter")
    drafted = _sum_rate("boltpipe_coordinator_drafted_tokens_total", CLUSTER, "drafter")
    trips = _sum_rate("boltpipe_coordinator_speculative_trips_total", CLUSTER, "drafter")
    return _timeseries(
        "Speculative decoding: drafts kept / tokens per trip",
        "short",
        [(f"{kept} / {drafted}", "{{drafter}} share kept"), (f"1 + {kept} / {trips}", "{{drafter}} tokens per trip")],
        "Of the trips that carried drafted tokens (a stream decoding alone): the share of drafts the last "
        "stage kept, and the tokens each such trip gave.",
    )


def _load_panels() -> list[timeseries.Panel]:
    depth = [
        (f"sum(boltpipe:num_requests_running{{{CLUSTER}}})", "running"),
        (f"sum(boltpipe:num_requests_waiting{{{CLUSTER}}})", "waiting"),
    ]
    sessions = [(f"sum by (node) (boltpipe_worker_active_sessions{{{WORKER}}})", "{{node}}")]
    return [
        _timeseries("Queue depth", "short", depth, "Requests the coordinator is serving and holding back."),
        _timeseries(
            "Active sessions per node", "short", sessions, "Sessions whose KV cache a worker holds."
        ),
    ]


def _memory_panels() -> list[timeseries.Panel]:
    kv = [(f"sum by (node) (boltpipe_worker_kv_cache_bytes{{{WORKER}}})", "{{node}}")]
    memory = [
        (f"sum by (node) (boltpipe_worker_resident_memory_bytes{{{WORKER}}})", "{{node}} resident"),
        (f"sum by (node) (boltpipe_worker_memory_limit_bytes{{{WORKER}}})", "{{node}} limit"),
    ]
    dashed = models.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})
    return [
        _timeseries("KV cache per node", "bytes", kv, "Bytes of KV cache each worker holds."),
        # The limit is a ceiling, not a series to compare shapes with: draw it dashed.
        _timeseries(
            "Memory per node: resident vs limit",
            "bytes",
            memory,
            "Resident memory of each worker process against the memory it may use.",
        ).override_by_regexp(".* limit$", [dashed]),
        _prefix_bytes_panel(),
    ]


def _error_panels() -> list[timeseries.Panel]:
    worker = [(_sum_rate("boltpipe_worker_errors_total", WORKER, "node, kind"), "{{node}} {{kind}}")]
    failures = [(_sum_rate("boltpipe_coordinator_request_failures_total", CLUSTER, "reason"), "{{reason}}")]
    finished = [
        (_sum_rate("boltpipe:request_success_total", CLUSTER, "finished_reason"), "{{finished_reason}}")
    ]
    return [
        _timeseries("Worker errors/s", PER_S, worker, "Errors each worker reported, by kind.", width=8),
        _timeseries(
            "Request failures/s", "reqps", failures, "Requests the coordinator failed, by reason.", width=8
        ),
        _timeseries(
            "Requests/s by finish reason",
            "reqps",
            finished,
            "Requests that completed, by why they stopped.",
            width=8,
        ),
    ]


def _variables() -> list[cogbuilder.Builder[models.VariableModel]]:
    cluster = (
        db.QueryVariable("cluster")
        .label("Cluster")
        .datasource(DATASOURCE)
        .query("label_values(boltpipe_worker_info, cluster)")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
    )
    node = (
        db.QueryVariable("node")
        .label("Node")
        .datasource(DATASOURCE)
        .query(f"label_values(boltpipe_worker_info{{{CLUSTER}}}, node)")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        # A regex for "All" rather than the list of every node: short, and it keeps
        # matching nodes that join before the variable refreshes.
        .all_value(".+")
        .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    return [db.DatasourceVariable("datasource").label("Data source").type("prometheus"), cluster, node]


def _builtin_annotation() -> db.AnnotationQuery:
    # What Grafana itself saves; without it the SDK writes `"annotations": {}` (no list).
    return (
        db.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(models.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .built_in(1)
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
    )


def build() -> dict[str, object]:
    rows: list[tuple[str, Sequence[timeseries.Panel | table.Panel]]] = [
        ("Nodes", [_nodes_table()]),
        ("Per-node compute", _latency_panels()),
        ("Hops", [_hop_panel("decode"), _hop_panel("prefill"), _network_panel()]),
        ("Throughput", _throughput_panels()),
        ("Requests", _request_panels()),
        ("Load", _load_panels()),
        ("Memory", _memory_panels()),
        ("Errors", _error_panels()),
    ]
    dashboard = (
        db.Dashboard(TITLE)
        .uid(UID)
        .tags(["boltpipe"])
        .editable()
        .time("now-1h", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .variables(_variables())
        .annotation(_builtin_annotation())
    )
    panel_id = 0
    for title, panels in rows:
        # Expanded rows followed by their panels: Row.with_panel would collapse the row.
        panel_id += 1
        dashboard = dashboard.with_row(db.Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            dashboard = dashboard.with_panel(panel.id(panel_id))
    # Round-trip through the SDK's encoder to get plain dicts and lists.
    plain: dict[str, object] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    return plain


def render() -> str:
    """The dashboard as committed: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if dashboards/boltpipe.json is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DASHBOARD_PATH.read_text(encoding="utf-8") if DASHBOARD_PATH.exists() else ""
        if current != text:
            message = f"{DASHBOARD_PATH} is stale: run `python -m dashboards.generate` and commit"
            print(message, file=sys.stderr)
            return 1
        return 0
    DASHBOARD_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DASHBOARD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
