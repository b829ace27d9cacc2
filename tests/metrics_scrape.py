"""Reading a running cluster's coordinator metrics in tests."""

from __future__ import annotations

import httpx

from cluster.commands.live_metrics import parse_scrape
from tests.api_cluster import ApiCluster


def coordinator_total(api: ApiCluster, name: str, **match: str) -> float:
    """The sum of the coordinator's series `name` (labels matching `match`) right now."""
    return parse_scrape(httpx.get(f"{api.inventory.url}/metrics", timeout=5).text, 0.0).total(name, **match)
