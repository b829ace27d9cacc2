"""`cluster doctor` end to end: the real command in a subprocess, real sh, real zeroconf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from deploy.doctor import DOCTOR_SERVICE_TYPE, check_mdns
from tests.cli_runner import cli_env, run_cli
from tests.system_tools import require, require_program, require_system_openblas


def test_doctor_table(tmp_path):
    done = run_cli(["doctor"], tmp_path / "home", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[1:] if line.strip()}
    assert done.stdout.splitlines()[0].split() == ["check", "status", "found", "hint"]
    # Multicast DNS works in this container (over eth0, and even in a namespace with only loopback up).
    assert rows["mdns"] == "ok" and rows["python"] == "ok" and rows["mlx"] == "ok" and rows["disk"] == "ok"
    assert "FAIL" not in rows.values()
    assert rows["thunderbolt"] == "warn"  # this machine has no Thunderbolt link
    assert "nothing fatal" in done.stdout
    blas = next(line for line in done.stdout.splitlines() if line.startswith("blas "))
    assert rows["blas"] == "ok", blas
    if sys.platform.startswith("linux"):  # .ci/run installs libopenblas0-pthread
        assert str(require_system_openblas()) in blas and "system OpenBLAS" in blas, blas


def test_doctor_names_the_blas_a_worker_would_use(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("MLX's BLAS is Accelerate on macOS, whatever BOLTPIPE_BLAS says")
    bundled = run_cli(["doctor", "--json", "--mdns-timeout", "3"], tmp_path / "home", timeout=120,
                      BOLTPIPE_BLAS="bundled")
    blas = {c["check"]: c for c in json.loads(bundled.stdout)["checks"]}["blas"]
    assert blas["status"] == "ok" and blas["found"] == "MLX's own BLAS (BOLTPIPE_BLAS=bundled)"
    wrong = run_cli(["doctor", "--json", "--mdns-timeout", "3"], tmp_path / "home", timeout=120,
                    BOLTPIPE_BLAS=str(tmp_path / "libnone.so"))
    assert wrong.returncode == 1
    blas = {c["check"]: c for c in json.loads(wrong.stdout)["checks"]}["blas"]
    assert blas["status"] == "FAIL" and "no such file" in blas["found"] and "BOLTPIPE_BLAS" in blas["hint"]


def test_blas_check_without_openblas_says_what_to_install(monkeypatch):
    from deploy.doctor import check_blas
    from node import blas_preload

    if not sys.platform.startswith("linux"):
        pytest.skip("MLX's BLAS is Accelerate on macOS")

    monkeypatch.setattr(blas_preload, "system_openblas", lambda: [])
    finding = check_blas({})
    assert finding.status == "warn" and "libopenblas0-pthread not installed" in finding.found
    assert "apt-get install libopenblas0-pthread" in finding.hint


def test_doctor_json(tmp_path):
    done = run_cli(["doctor", "--json"], tmp_path / "home", timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["ok"] is True
    assert checks["mdns"]["status"] == "ok" and DOCTOR_SERVICE_TYPE in checks["mdns"]["found"]
    version = ".".join(map(str, sys.version_info[:3]))
    assert checks["python"]["found"].startswith(version)
    assert checks["mlx"]["found"].startswith("mlx ") and "cpu" in checks["mlx"]["found"]
    probe = report["probe"]
    assert probe["os"] == "Linux" and probe["mem_total_bytes"] > 0 and probe["disk_free_bytes"] > 0
    assert probe["metal"] is None and probe["ane"] is False
    assert probe["install_dir"] == str(tmp_path / "home")


def test_doctor_without_usable_python_fails(tmp_path):
    done = run_cli(["doctor", "--python", str(tmp_path / "python3.13"), "--mdns-timeout", "3"], tmp_path / "home",
                   timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    python_row = next(line for line in done.stdout.splitlines() if line.startswith("python "))
    assert "FAIL" in python_row and "not found" in python_row and "install Python 3.11+" in python_row


def test_mdns_check_in_process():
    finding = check_mdns(timeout_s=5)
    assert finding.ok, finding


def test_doctor_where_multicast_cannot_work(tmp_path):
    """In a network namespace with no interface up zeroconf has nothing to listen on: the mDNS check
    says so with its hint, and the command still exits 0 (the static inventory works without it)."""
    require_program("ip", "iproute2")
    require(None if os.geteuid() == 0 else "network namespaces need root (CAP_NET_ADMIN)")
    ns = f"bpdoc-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, timeout=20)
    assert made.returncode == 0, f"`ip netns add` failed: {made.stderr}"
    try:
        home = tmp_path / "home"
        home.mkdir()
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "cluster", "doctor", "--json", "--mdns-timeout", "2"],
            env=cli_env(home), capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    mdns = {c["check"]: c for c in json.loads(done.stdout)["checks"]}["mdns"]
    assert mdns["status"] == "warn" and "5353" in mdns["hint"] and "inventory" in mdns["hint"]
