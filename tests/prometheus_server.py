"""A real Prometheus server (Debian's `prometheus`) for the tests: started on a free loopback port
with a configuration the test writes, queried through its HTTP API, ended by pid."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import yaml

from deploy.local import stop_pids
from tests.sshd_host import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
REPO_ROOT = Path(__file__).resolve().parent.parent


def prometheus_available() -> str | None:
    """None when Prometheus can run here; otherwise why not."""
    return None if Path(PROMETHEUS).exists() else "Prometheus not installed (apt-get install prometheus)"


def scrape_config(targets_glob: Path, scrape_interval: str = "1s") -> dict:
    """boltpipe's own dashboards/prometheus.yml, scraping faster and reading `targets_glob`."""
    config = yaml.safe_load((REPO_ROOT / "dashboards" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=scrape_interval, evaluation_interval=scrape_interval,
                            scrape_timeout=scrape_interval)
    for job in config["scrape_configs"]:
        for sd in job["file_sd_configs"]:
            sd["files"] = [str(targets_glob)]
            sd["refresh_interval"] = scrape_interval
    return config


@dataclass
class PrometheusServer:
    process: subprocess.Popen
    url: str
    log: Path

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """The result vector of an instant query; raises with Prometheus's own error."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=30).json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {expr!r}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def targets(self) -> list[dict]:
        return httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]

    def wait_scraped_since(self, since: float, expected_targets: int, timeout_s: float = 60.0) -> None:
        """Until every one of the targets has been scraped, successfully, after `since` (epoch s)."""
        deadline = time.monotonic() + timeout_s
        while True:
            fresh = [t for t in self.targets()
                     if t["health"] == "up" and datetime.fromisoformat(t["lastScrape"]).timestamp() > since]
            if len(fresh) >= expected_targets:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not every target scraped within {timeout_s:.0f} s: {self.targets()}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_pids([self.process.pid], timeout_s=10.0)


def start_prometheus(directory: Path, config: dict, timeout_s: float = 60.0) -> PrometheusServer:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = directory / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"Prometheus was not ready within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
