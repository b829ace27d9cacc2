"""Read the PromQL out of a dashboard JSON without the Grafana SDK.

Kept free of grafana_foundation_sdk so that tests and tools that only need the
expressions (for example to run them against a real Prometheus) need no SDK.
"""

import re
from typing import Any

# Grafana's `label_values(metric{...}, label)` is not PromQL: the selector inside is.
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<expr>.+)\s*,\s*\w+\s*\)\s*$", re.DOTALL)
# $name, ${name} and ${name:format}.
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))")


def _panel_queries(panels: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for panel in panels:
        title = panel.get("title", "")
        for target in panel.get("targets") or []:
            if target.get("expr"):
                found.append((title, target["expr"]))
        # A collapsed row keeps its panels inside itself.
        found.extend(_panel_queries(panel.get("panels") or []))
    return found


def _variable_expr(query: str | dict[str, Any]) -> str | None:
    text = query.get("query", "") if isinstance(query, dict) else query
    match = _LABEL_VALUES.match(text)
    if match:
        return match.group("expr").strip()
    # label_values(label) with no selector, or an empty query: nothing to run.
    return None if text.startswith("label_values(") or not text.strip() else text


def dashboard_queries(dashboard_json: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, rows included, then each query variable's selector."""
    found = _panel_queries(dashboard_json.get("panels") or [])
    for variable in (dashboard_json.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        expr = _variable_expr(variable.get("query") or "")
        if expr:
            found.append((f"variable {variable['name']}", expr))
    return found


def expand(
    expr: str,
    cluster: str = ".+",
    node: str = ".+",
    rate_interval: str = "30s",
    *,
    interval: str = "15s",
    range_: str = "1h",
) -> str:
    """Substitute Grafana's variables so Prometheus's HTTP API can run the expression.

    cluster and node are regexes (the dashboard matches them with =~). An unknown
    variable raises ValueError rather than reaching Prometheus as a parse error.
    """
    values = {
        "cluster": cluster,
        "node": node,
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__range": range_,
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(substitute, expr)
