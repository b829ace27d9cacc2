"""The lab: three workers, each in its own network namespace on a bridged "switch", and a
coordinator in a fourth that knows only their names. It finds them by Bonjour alone, plans,
serves a request through the OpenAI API, and notices a worker that goes away. A node that
never appears makes `cluster up` fail after the timeout, naming it, with nothing left running.

Skipped, with the reason, where network namespaces cannot be created (not root, no iproute2).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml

from proto import PROTOCOL_VERSION, WORKER_READY_MARKER
from tests.cli_runner import cli_env
from tests.netns_lab import Lab, LabUnavailable
from tests.reference import reference_text, tokenizer_for
from tests.system_tools import require

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

WORKERS = ["h1", "h2", "h3"]
PORT = 50061
SERVE_PORT = 8000


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        lab.build([*WORKERS, "coord"])
    except LabUnavailable as exc:
        lab.teardown()
        require(f"network namespaces cannot be created here: {exc}")
    try:
        yield lab
    finally:
        lab.teardown()


def _wait_ready(log: Path, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if WORKER_READY_MARKER in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready after {timeout_s} s:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory) -> Path:
    """Where the served cluster's inventory and BOLTPIPE_HOME live: its credentials are made there
    (`cluster credentials`) before the workers start, as a person starting workers by hand would."""
    return tmp_path_factory.mktemp("lab-cluster")


@pytest.fixture(scope="module")
def workers(lab: Lab, tmp_path_factory, cluster_dir: Path, smollm2_dir: Path):
    """`cluster worker` in each host namespace, listening on all its addresses (so it advertises),
    with the cluster's secret and TLS files: the links cross the lab's network in mutual TLS."""
    logs = tmp_path_factory.mktemp("lab-logs")
    inventory = write_lab_inventory(cluster_dir, lab, smollm2_dir, [f"lab-{h}" for h in WORKERS], timeout_s=30)
    creds = cluster_dir / "credentials"
    made = subprocess.run([sys.executable, "-m", "cluster", "credentials", str(inventory), str(creds)],
                          env=cli_env(cluster_dir / "home"), capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    procs: dict[str, subprocess.Popen] = {}
    try:
        for host in WORKERS:
            log = logs / f"{host}.log"
            with open(log, "wb") as out:
                procs[host] = subprocess.Popen(
                    lab.command(host, [sys.executable, "-m", "node", "--host", "0.0.0.0", "--port", str(PORT),
                                       "--name", f"lab-{host}", "--secret-file", str(creds / "cluster-secret"),
                                       "--tls-dir", str(creds)]),
                    stdout=out, stderr=subprocess.STDOUT, env=cli_env(logs, PYTHONUNBUFFERED="1"))
        for host in WORKERS:
            _wait_ready(logs / f"{host}.log", procs[host], 90)
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()
        for proc in procs.values():
            proc.wait(timeout=20)


def in_coord(lab: Lab, argv: list[str], home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(lab.command("coord", argv), env=cli_env(home), capture_output=True, text=True,
                          timeout=timeout, cwd=home.parent)


def cluster_cli(lab: Lab, args: list[str], home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return in_coord(lab, [sys.executable, "-m", "cluster", *args], home, timeout)


def python_in_coord(lab: Lab, code: str, home: Path, timeout: float = 120) -> str:
    done = in_coord(lab, [sys.executable, "-c", textwrap.dedent(code)], home, timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def write_lab_inventory(directory: Path, lab: Lab, model_dir: Path, names: list[str], timeout_s: float) -> Path:
    path = directory / "lab.yaml"
    path.write_text(yaml.safe_dump({
        "cluster": f"lab-{lab.tag}",
        "model": {"path": str(model_dir), "name": "smollm2"},
        "serve": {"host": lab.hosts["coord"], "port": SERVE_PORT, "context_length": 2048, "max_concurrent": 2},
        "discovery": {"timeout_s": timeout_s},
        "nodes": [{"name": n} for n in names],   # no addresses: Bonjour finds them
    }))
    return path


def processes_of(inventory: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(inventory) in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_a_named_node_that_never_appears_fails_up_naming_it(lab: Lab, workers, tmp_path: Path, smollm2_dir: Path):
    inventory = write_lab_inventory(tmp_path, lab, smollm2_dir, ["lab-h1", "ghost"], timeout_s=4)
    started = time.monotonic()
    up = cluster_cli(lab, ["up", str(inventory), "--detach", "--no-progress"], tmp_path / "home", timeout=120)
    took = time.monotonic() - started
    try:
        assert up.returncode == 2, up.stdout + up.stderr
        assert "these nodes had not appeared by Bonjour: ghost " in up.stderr, up.stderr
        assert "nodes seen:" in up.stderr and "lab-h1" in up.stderr  # seen, not missing
        assert took < 60, f"the 4 s discovery timeout took {took:.0f} s to report"
        assert processes_of(inventory) == [], "nothing of the failed cluster may keep running"
        plan = cluster_cli(lab, ["plan", str(inventory)], tmp_path / "home", timeout=120)
        assert plan.returncode == 2 and "ghost" in plan.stderr
    finally:
        for proc in processes_of(inventory):
            proc.kill()


def test_coordinator_finds_workers_by_bonjour_alone_and_serves(lab: Lab, workers, cluster_dir: Path, smollm2_dir: Path):
    home = cluster_dir / "home"
    names = [f"lab-{h}" for h in WORKERS]
    waited = python_in_coord(lab, f"""
        import asyncio, time
        from cluster.planning.discovery import Browser
        async def main():
            t = time.monotonic()
            async with Browser() as b:
                await b.wait_for({names!r}, 30)
            print(f"{{time.monotonic() - t:.3f}}")
        asyncio.run(main())
    """, home)
    print(f"\nBonjour discovery of 3 workers from the coordinator's namespace: {float(waited):.2f} s")

    found = cluster_cli(lab, ["discover", "--json", "--timeout", "3"], home)
    assert found.returncode == 0, found.stderr
    adverts = {n["name"]: n for n in json.loads(found.stdout)}
    assert set(names) <= set(adverts)
    for host in WORKERS:
        advert = adverts[f"lab-{host}"]
        assert advert["port"] == PORT and advert["protocol_version"] == PROTOCOL_VERSION and "mlx-cpu" in advert["backends"]
        assert advert["usable_memory_bytes"] > 0 and advert["machine"]
        assert [(i["address"], i["kind"]) for i in advert["interfaces"]] == [(lab.hosts[host], "ethernet")]

    inventory = write_lab_inventory(cluster_dir, lab, smollm2_dir, names, timeout_s=30)
    plan = cluster_cli(lab, ["plan", str(inventory)], home)
    assert plan.returncode == 0, plan.stderr
    print(plan.stdout)
    for host in WORKERS[1:]:
        assert f"{lab.hosts[host]}:{PORT} (ethernet)" in plan.stdout  # data plane over the lab's Ethernet

    up = cluster_cli(lab, ["up", str(inventory), "--detach", "--no-progress"], home)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # The API listens beyond loopback and the inventory sets no key: `cluster up` made one.
        log = next((home / "run").glob("*/coordinator.log")).read_text()
        assert "clients must send `Authorization: Bearer <key>`" in log
        key = next((home / "secrets").glob("*/api-key")).read_text().strip()
        prompt = "What is the capital of France?"
        refused = python_in_coord(lab, f"""
            import httpx
            print(httpx.post("http://{lab.hosts['coord']}:{SERVE_PORT}/v1/chat/completions", timeout=30,
                             json={{"messages": [{{"role": "user", "content": "Hi"}}]}}).status_code, end="")
        """, home)
        assert refused == "401"
        answer = python_in_coord(lab, f"""
            import httpx
            r = httpx.post("http://{lab.hosts['coord']}:{SERVE_PORT}/v1/chat/completions", timeout=120,
                           headers={{"Authorization": "Bearer {key}"}},
                           json={{"messages": [{{"role": "user", "content": {prompt!r}}}], "max_tokens": 16, "temperature": 0}})
            r.raise_for_status()
            print(r.json()["choices"][0]["message"]["content"], end="")
        """, home)
        ids = tokenizer_for(smollm2_dir).encode_chat([{"role": "user", "content": prompt}])
        assert answer == reference_text(smollm2_dir, ids, 16)

        # A worker that stops says goodbye by Bonjour; the coordinator's health shows it.
        workers["h3"].send_signal(signal.SIGTERM)
        workers["h3"].wait(timeout=30)
        health = python_in_coord(lab, f"""
            import httpx, time, json
            deadline = time.monotonic() + 15
            while True:
                r = httpx.get("http://{lab.hosts['coord']}:{SERVE_PORT}/health", timeout=10)
                if r.status_code == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            print(json.dumps([r.status_code, r.json()]))
        """, home)
        status, body = json.loads(health)
        assert status == 503 and body["nodes_vanished"] == ["lab-h3"], body
    finally:
        cluster_cli(lab, ["down", str(inventory)], home, timeout=60)
        for proc in processes_of(inventory):
            proc.kill()
