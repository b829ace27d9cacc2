"""`backend: ane` at plan time: refused for a node that cannot run Core ML on a Neural Engine (with
the reason), and for one that can, planned with the Core ML figures: a context capped where the
conversion fixes it, fp16 KV caches at that full context, and the settings the worker converts with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from cluster.inventory import parse_inventory
from cluster.planning.cluster_plan import make_plan, plan_table
from cluster.planning.node_facts import LOOPBACK, NodeFacts
from cluster.planning.placement import PlacementError
from node.coreml.settings import MAX_CONTEXT, parse_backend
from node.model_config import read_model_info
from node.model_sizes import read_model_sizes
from tests.cli_runner import run_cli
from tests.cluster_harness import free_ports

GB = 1000**3


def _inventory(tmp_path: Path, model: Path, backends: list[str], **serve) -> Path:
    ports = free_ports(len(backends) + 1)
    data = {"cluster": "ane", "model": {"path": str(model)}, "serve": {"port": ports[-1], **serve},
            "nodes": [{"name": f"w{i + 1}", "host": "127.0.0.1", "port": ports[i], "backend": b}
                      for i, b in enumerate(backends)]}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _facts(name: str, port: int, backends: tuple[str, ...], machine: str) -> NodeFacts:
    return NodeFacts(name=name, source="static", address=f"127.0.0.1:{port}", port=port, usable_memory_bytes=8 * GB,
                     machine_id=machine, machine="Apple M4", interfaces=(LOOPBACK["127.0.0.1"],), backends=backends)


@pytest.mark.skipif(sys.platform == "darwin", reason="a Mac may well have a Neural Engine; this checks a node without")
def test_backend_ane_on_a_linux_node_fails_at_plan_time(smollm2_dir, tmp_path):
    inventory = _inventory(tmp_path, smollm2_dir, ["ane", "auto"])
    planned = run_cli(["plan", str(inventory), "--no-progress"], tmp_path / "home", timeout=120,
                      BOLTPIPE_COREML_EXECUTOR="")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    message = planned.stderr
    assert "node w1 has backend: ane, but it reports no Neural Engine that Core ML can use" in message
    assert "(its backends: mlx-cpu)" in message and "Give it backend: auto, gpu or cpu" in message
    assert "w2" not in message, "only the node that asked for the Neural Engine is named"


def test_a_node_with_a_neural_engine_is_planned_with_core_ml_figures(smollm2_dir, tmp_path):
    inventory = parse_inventory(yaml.safe_load(_inventory(tmp_path, smollm2_dir, ["ane", "auto"]).read_text()),
                                source=tmp_path / "inventory.yaml")
    model = read_model_info(smollm2_dir)
    sizes = read_model_sizes(model.path, model.num_layers)
    facts = [_facts("w1", inventory.nodes[0].port, ("mlx-gpu", "mlx-cpu", "coreml-ane"), "a"),
             _facts("w2", inventory.nodes[1].port, ("mlx-gpu", "mlx-cpu"), "b")]
    plan = make_plan(inventory, model, sizes, facts)
    assert model.max_position_embeddings == 8192 and plan.context_length == MAX_CONTEXT
    assert "capped from 8192 to 4096" in plan.context_note and "w1" in plan.context_note
    ane, gpu = plan.stages
    settings = parse_backend(ane.backend)
    assert (settings.context_length, settings.prefill_chunk) == (MAX_CONTEXT, 64) and gpu.backend == "mlx"
    # KV per layer for 8 sessions at 4096 positions: 3 KV heads x 64, K and V; fp16 on the Neural
    # Engine, float32 (this model's MLX cache type) on the GPU node.
    per_layer_fp16 = 8 * MAX_CONTEXT * 2 * 3 * 64 * 2
    assert ane.placement.kv_bytes == ane.num_layers * per_layer_fp16
    assert gpu.placement.kv_bytes == gpu.num_layers * per_layer_fp16 * 2
    assert ane.placement.headroom_bytes < gpu.placement.headroom_bytes, "the ANE works in chunks of 64, not 512"
    assert "Core ML on the Neural Engine: w1" in plan_table(plan, "smollm2")


def test_nodes_without_core_ml_are_all_named_in_one_error(smollm2_dir, tmp_path):
    inventory = parse_inventory(yaml.safe_load(_inventory(tmp_path, smollm2_dir, ["ane", "ane"]).read_text()),
                                source=tmp_path / "inventory.yaml")
    model = read_model_info(smollm2_dir)
    facts = [_facts("w1", inventory.nodes[0].port, ("mlx-cpu",), "a"), _facts("w2", inventory.nodes[1].port, (), "b")]
    with pytest.raises(PlacementError) as info:
        make_plan(inventory, model, read_model_sizes(model.path, model.num_layers), facts)
    assert "node w1 has backend: ane" in str(info.value) and "node w2 has backend: ane" in str(info.value)
    assert "(its backends: none reported)" in str(info.value)


def test_plan_json_names_each_stages_backend(smollm2_dir, tmp_path):
    planned = run_cli(["plan", str(_inventory(tmp_path, smollm2_dir, ["auto", "cpu"])), "--json", "--no-progress"],
                      tmp_path / "home", timeout=120)
    assert planned.returncode == 0, planned.stderr
    data = json.loads(planned.stdout)
    assert [s["backend"] for s in data["stages"]] == ["mlx", "mlx"] and data["context_note"] == ""
