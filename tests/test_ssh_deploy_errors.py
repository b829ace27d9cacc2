"""`cluster up` refuses nodes it cannot use — wrong key, unknown host key under the strict policy,
an unreachable host, a machine without Python — with one message naming each, and starts nothing
on the nodes that were fine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deploy.local import stop_pids
from tests.cli_runner import run_cli
from tests.cluster_harness import free_ports, worker_processes
from tests.sshd_host import keygen, path_without, sshd_available, start_sshd
from tests.system_tools import require

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop



@pytest.fixture(scope="module", autouse=True)
def _sshd_installed() -> None:
    require(sshd_available())


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    base = tmp_path_factory.mktemp("sshfail")
    key = keygen(base / "client_key")
    (base / "bare_home").mkdir()
    good = start_sshd("good", base / "sshd_good", [key])
    bare = start_sshd("bare", base / "sshd_bare", [key], path_env=path_without(("python",), base / "bin"),
                      home_env=str(base / "bare_home"))
    try:
        known = base / "known_hosts"
        known.write_text(good.known_hosts_line + bare.known_hosts_line)
        yield base, key, known, good, bare
    finally:
        stop_pids([good.pid, bare.pid])


def _inventory(base: Path, smollm2_dir: Path, nodes: list[dict], key: Path, known: Path) -> tuple[Path, list[int]]:
    ports = free_ports(len(nodes) + 1)
    for node, port in zip(nodes, ports):
        node.update(host="127.0.0.1", port=port)
    path = base / f"inv-{ports[0]}.yaml"
    path.write_text(yaml.safe_dump({
        "cluster": "broken", "model": {"path": str(smollm2_dir)},
        "serve": {"port": ports[-1]}, "ssh": {"key": str(key), "known_hosts_file": str(known)}, "nodes": nodes,
    }))
    return path, ports[:-1]


def _nothing_started(install_dir: Path, ports: list[int]) -> None:
    assert worker_processes(ports) == []
    assert not (install_dir / "workers").exists() and not (install_dir / "run").exists()


def test_unusable_nodes_are_all_named_and_nothing_starts(machines, smollm2_dir, tmp_path):
    base, key, known, good, bare = machines
    wrong_key = keygen(tmp_path / "wrong_key")
    good_dir = tmp_path / "good_install"
    inventory, ports = _inventory(base, smollm2_dir, [
        {"name": "fine", "ssh": {"port": good.port, "install_dir": str(good_dir)}},
        {"name": "wrongkey", "ssh": {"port": good.port, "key": str(wrong_key), "install_dir": str(tmp_path / "x")}},
        {"name": "stranger", "ssh": {"port": good.port, "known_hosts_file": str(tmp_path / "empty"),
                                     "install_dir": str(tmp_path / "y")}},
        {"name": "offline", "ssh": {"port": free_ports(1)[0], "install_dir": str(tmp_path / "z")}},
    ], key, known)
    up = run_cli(["up", str(inventory), "--detach"], tmp_path / "home", timeout=120)
    assert up.returncode == 2, up.stdout + up.stderr
    err = up.stderr
    assert "node wrongkey" in err and "authentication failed" in err
    assert "node stranger" in err and "host key is not trusted" in err and "accept-new" in err
    assert "node offline" in err and "connection refused" in err
    assert "node fine" not in err and "Traceback" not in err
    _nothing_started(good_dir, ports)


def test_a_machine_without_python_is_refused_at_preflight(machines, smollm2_dir, tmp_path):
    base, key, known, good, bare = machines
    good_dir = tmp_path / "good_install"
    inventory, ports = _inventory(base, smollm2_dir, [
        {"name": "fine", "ssh": {"port": good.port, "install_dir": str(good_dir)}},
        {"name": "nopython", "ssh": {"port": bare.port}},
    ], key, known)
    up = run_cli(["up", str(inventory), "--detach"], tmp_path / "home", timeout=120)
    assert up.returncode == 2, up.stdout + up.stderr
    err = up.stderr
    assert "preflight failed on 1 node(s)" in err and "nopython:" in err and "Python 3.11" in err, err
    assert "Traceback" not in err
    # The per-node table comes with it: both machines, what each has.
    assert "node" in err and "fine" in err and "missing" in err
    _nothing_started(good_dir, ports)
    assert not (base / "bare_home" / ".boltpipe").exists()
