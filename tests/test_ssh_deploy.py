"""`cluster up` / `status` / `logs` / `down` through real OpenSSH servers standing in for three
remote machines (several sshd on 127.0.0.1, each node with its own install directory): the wheel is
built and installed into a fresh virtual environment per node, each node receives only its own
layers, a completion is served, a second `up` sends nothing, a killed worker is seen and brought
back, and `down` leaves no process and no service behind."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest
import yaml

from cluster.launch.ssh_deploy import DEPLOY_REPORT
from deploy.local import stop_pids
from deploy.prometheus_targets import TARGETS_FILE
from proto import WORKER_READY_MARKER
from tests.cli_runner import run_cli
from tests.cluster_harness import free_ports, worker_processes
from tests.model_factory import model_bytes
from tests.reference import reference_text, tokenizer_for
from tests.sshd_host import keygen, sshd_available, start_sshd
from tests.system_tools import require

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop



@pytest.fixture(scope="module", autouse=True)
def _sshd_installed() -> None:
    require(sshd_available())

QUESTION = "What is the capital of France?"


def _supervisors(install_dirs: list[Path]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "deploy.supervise" in cmd and any(str(d) in cmd for d in install_dirs):
            found.append(proc)
    return found


def _run_dir(home: Path) -> Path:
    runs = list((home / "run").iterdir())
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def ssh_cluster(tmp_path_factory, smollm2_dir):
    """Three sshd 'machines' and an inventory that deploys a worker to each."""
    base = tmp_path_factory.mktemp("sshdeploy")
    key = keygen(base / "client_key")
    hosts = [start_sshd(f"m{i}", base / f"sshd{i}", [key]) for i in (1, 2, 3)]
    try:
        known = base / "known_hosts"
        known.write_text("".join(h.known_hosts_line for h in hosts))
        ports = free_ports(4)
        install_dirs = [base / f"node{i}" / "boltpipe" for i in (1, 2, 3)]
        inventory = base / "ssh.yaml"
        inventory.write_text(yaml.safe_dump({
            "cluster": "sshdemo",
            "model": {"path": str(smollm2_dir), "name": "smollm2"},
            "serve": {"host": "127.0.0.1", "port": ports[3]},
            "ssh": {"key": str(key), "known_hosts_file": str(known)},
            "nodes": [{"name": f"w{i + 1}", "host": "127.0.0.1", "port": ports[i],
                       "ssh": {"port": hosts[i].port, "install_dir": str(install_dirs[i])}} for i in range(3)],
        }))
        yield inventory, base / "home", install_dirs, ports[:3], key, known, hosts
    finally:
        # Whatever happened: the coordinator, supervisors and workers this module started end here.
        procs = worker_processes(ports[:3]) + _supervisors([base])
        for proc in psutil.process_iter(["cmdline"]):
            if str(inventory) in " ".join(proc.info["cmdline"] or []):
                procs.append(proc)
        stop_pids([p.pid for p in procs])
        stop_pids([h.pid for h in hosts])


def _complete(port: int, max_tokens: int = 16) -> str:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=120)
    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=max_tokens, temperature=0)
    return reply.choices[0].message.content


def _report(home: Path) -> dict:
    return json.loads((_run_dir(home) / DEPLOY_REPORT).read_text())


def test_up_twice_status_kill_logs_down(ssh_cluster, smollm2_dir):
    inventory, home, install_dirs, ports, *_ = ssh_cluster
    serve_port = yaml.safe_load(inventory.read_text())["serve"]["port"]
    expected = reference_text(smollm2_dir, tokenizer_for(smollm2_dir).encode_user_prompt(QUESTION), 16)

    started = time.monotonic()
    up = run_cli(["up", str(inventory), "--detach"], home, timeout=900)
    first_up_s = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    report = _report(home)
    total = model_bytes(smollm2_dir)
    for name, node in report.items():
        assert node["installed"] and node["worker"] == "started", (name, node)
        # Only its own layers: well under the model, and the shards add up to about the model.
        assert 0 < node["shard_bytes"] < 0.8 * total, (name, node, total)
        assert node["shard_bytes"] <= node["weight_bytes_sent"] <= node["shard_bytes"] + 4096, node  # + its manifest
    assert sum(n["shard_bytes"] for n in report.values()) >= 0.95 * total
    print(f"\nfirst up: {first_up_s:.1f} s; bytes pushed per node: "
          + ", ".join(f"{n}: {r['bytes_sent']} (weights {r['weight_bytes_sent']})" for n, r in report.items())
          + f"; model {total} bytes")
    assert _complete(serve_port) == expected
    for d in install_dirs:  # the worker's settings (later its auth material) are the user's alone
        settings = d / "workers" / f"w{install_dirs.index(d) + 1}.json"
        assert settings.stat().st_mode & 0o077 == 0, oct(settings.stat().st_mode)
    workers_before = {p.pid for p in worker_processes(ports)}
    assert len(workers_before) == 3

    # Unchanged second up: nothing sent, nothing started twice.
    started = time.monotonic()
    again = run_cli(["up", str(inventory), "--detach"], home, timeout=300)
    second_up_s = time.monotonic() - started
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already up" in again.stdout
    report = _report(home)
    assert all(n["bytes_sent"] == 0 and n["files_sent"] == 0 and n["worker"] == "running" for n in report.values()), report
    assert {p.pid for p in worker_processes(ports)} == workers_before
    assert len(_supervisors(install_dirs)) == 3
    print(f"second up: {second_up_s:.1f} s, 0 bytes sent")

    status = run_cli(["status", str(inventory), "--json"], home, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    rows = {r["node"]: r for r in json.loads(status.stdout)["nodes"]}
    assert [rows[f"w{i}"]["state"] for i in (1, 2, 3)] == ["serving"] * 3
    assert rows["w1"]["layers"] == "[0,10)" and rows["w1"]["step_ms"] > 0

    targets = json.loads((_run_dir(home) / TARGETS_FILE).read_text())
    assert sorted(t["labels"]["node"] for t in targets) == ["coordinator", "w1", "w2", "w3"]
    metrics = httpx.get(f"http://{targets[0]['targets'][0]}/metrics", timeout=10).text
    assert 'boltpipe_worker_loaded{node="w1",stage="0"} 1.0' in metrics

    logs = run_cli(["logs", str(inventory), "w2"], home, timeout=60)
    assert logs.returncode == 0 and WORKER_READY_MARKER in logs.stdout and "name=w2" in logs.stdout

    # The machine's worker dies with its supervisor: status says down, up brings it back.
    pidfile = json.loads((install_dirs[1] / "run" / "w2.pid").read_text())
    for pid in (pidfile["supervisor_pid"], pidfile["worker_pid"]):
        os.kill(pid, signal.SIGKILL)
    stop_pids([pidfile["supervisor_pid"], pidfile["worker_pid"]])
    status = run_cli(["status", str(inventory), "--json"], home, timeout=120)
    assert status.returncode == 1
    rows = {r["node"]: r for r in json.loads(status.stdout)["nodes"]}
    assert rows["w2"]["state"].startswith("down") and rows["w2"]["reachable"], rows["w2"]
    assert rows["w1"]["state"] == "serving"
    table = run_cli(["status", str(inventory)], home, timeout=120)
    assert "w2" in table.stdout and "down" in table.stdout

    back = run_cli(["up", str(inventory), "--detach"], home, timeout=600)
    assert back.returncode == 0, back.stdout + back.stderr
    report = _report(home)
    assert report["w2"]["worker"] == "started" and report["w1"]["worker"] == "running"
    assert all(n["bytes_sent"] == 0 for n in report.values()), report
    assert _complete(serve_port) == expected

    down = run_cli(["down", str(inventory)], home, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 15
    while (worker_processes(ports) or _supervisors(install_dirs)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_processes(ports) == [] and _supervisors(install_dirs) == []
    for d in install_dirs:
        assert not list((d / "workers").glob("*")), "worker settings and service records removed"
        assert not list((d / "run").glob("*.pid")), "no pid file left"
        assert (d / "venv").is_dir() and list((d / "models").iterdir()), "caches kept without --purge"
    status = run_cli(["status", str(inventory), "--json"], home, timeout=120)
    rows = json.loads(status.stdout)["nodes"]
    assert all(r["state"].startswith("down") for r in rows), rows
