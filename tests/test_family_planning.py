"""What the planner knows of every family before anything loads: each layer's real cache (full,
sliding window, DeepSeek's latent, a linear-attention state), per-layer bytes that count experts, a
checkpoint's parts by name (vision towers and multi-token-prediction layers to no stage), and refusals
at plan time: an unsupported model type, and Core ML for a family it cannot convert."""

from __future__ import annotations

import dataclasses

import json
import resource
import time
from pathlib import Path

import mlx.core as mx
import pytest
import yaml

from cluster.inventory import parse_inventory
from cluster.planning.cluster_plan import make_plan, plan_table
from cluster.planning.node_facts import LOOPBACK, NodeFacts
from cluster.planning.placement import NodeBudget, PlacementError, plan_placement
from deploy.stage_tensors import stage_tensor_names
from node.kv_profile import kv_profile
from node.model_config import read_model_info
from node.model_sizes import ModelSizes, read_model_sizes
from tests.cli_runner import run_cli
from tests.cluster_harness import free_ports
from tests.tiny_models import family_config, write_tiny_model

GB = 1000**3


def test_smollm2_layers_keep_keys_and_values_of_three_heads(smollm2_dir: Path) -> None:
    profile = kv_profile(read_model_info(smollm2_dir).config)
    assert len(profile) == 30
    assert {(layer.per_token, layer.fixed, layer.max_tokens) for layer in profile} == {(2 * 3 * 64, 0, None)}
    assert profile[0].bytes(2048, 2) == 2 * 3 * 64 * 2048 * 2


def test_sliding_layers_hold_at_most_their_window() -> None:
    profile = kv_profile(family_config("gemma3_text", sliding_window=1024))   # pattern 3: layers 2, 5 global
    assert [layer.kind for layer in profile] == ["window 1024", "window 1024", "full"] * 2
    sliding, full = profile[0], profile[2]
    assert sliding.bytes(100, 2) == full.bytes(100, 2), "below the window both hold every token"
    assert sliding.bytes(8192, 2) == full.bytes(1024, 2) < full.bytes(8192, 2)


def test_latent_attention_caches_the_latent_not_the_heads() -> None:
    config = family_config("deepseek_v3", kv_lora_rank=512, qk_rope_head_dim=64, num_attention_heads=16)
    assert {layer.per_token for layer in kv_profile(config)} == {512 + 64}


def test_linear_attention_keeps_a_fixed_state() -> None:
    profile = kv_profile(family_config("qwen3_next"))   # full attention every third layer
    linear, full = profile[0], profile[2]
    assert linear.kind == "fixed state" and linear.per_token == 0 and linear.fixed > 0
    assert linear.bytes(10, 2) == linear.bytes(100_000, 2)
    assert full.kind == "full" and full.per_token == 2 * 2 * 16


def test_a_real_size_moe_config_is_profiled_without_allocating_it() -> None:
    """Qwen3-235B-A22B's shape (94 layers, 128 experts; about 470 GB in bfloat16): the model is
    built lazily and only shapes are read, so the planner's machine needs none of that memory."""
    config = family_config("qwen3_moe", hidden_size=4096, num_hidden_layers=94, num_attention_heads=64,
                           num_key_value_heads=4, head_dim=128, intermediate_size=12288, num_experts=128,
                           num_experts_per_tok=8, moe_intermediate_size=1536, vocab_size=151936)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.monotonic()
    profile = kv_profile(config)
    took = time.monotonic() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(f"\nprofile of a 94-layer, 128-expert config: {took:.2f} s, peak memory grew {grown / 1e6:.0f} MB")
    assert len(profile) == 94 and {layer.per_token for layer in profile} == {2 * 4 * 128}
    assert grown < 500e6


def test_layer_bytes_count_experts_and_leave_out_vision_and_mtp(tmp_path: Path) -> None:
    moe = read_model_sizes(write_tiny_model(tmp_path / "moe", "qwen3_moe", hf_layout=True))
    dense_layer, expert_layer = moe.layer_bytes[0], moe.layer_bytes[1]   # layer 0 is dense (mlp_only_layers)
    assert expert_layer > 2 * dense_layer
    vlm = write_tiny_model(tmp_path / "vlm", "mistral3")
    weights = mx.load(str(vlm / "model.safetensors"))
    weights["vision_tower.transformer.layers.0.attention.q_proj.weight"] = mx.zeros((1024, 1024))
    weights["multi_modal_projector.linear_1.weight"] = mx.zeros((64, 64))
    mx.save_safetensors(str(vlm / "model.safetensors"), weights)
    sizes = read_model_sizes(vlm)
    assert sizes.num_layers == 6 and sizes.other_bytes == 0, "vision towers are no stage's and not layer 0's"
    names = list(weights) + ["model.layers.6.eh_proj.weight", "model.layers.6.mlp.experts.0.up_proj.weight"]
    kept = stage_tensor_names(names, 4, 6, 6, tied=False, extra_layers=1)
    assert not [n for n in kept if "vision" in n or "projector" in n or ".layers.6." in n], kept


def test_placement_gives_windowed_layers_the_memory_they_really_need() -> None:
    """Two equal nodes, six equal layers; the first three layers keep a full cache, the last three a
    small window: the node taking the windowed ones can take more layers."""
    sizes = ModelSizes(layer_bytes=(100,) * 6, embedding_bytes=0, norm_bytes=0, head_bytes=0, other_bytes=0, tied=False)
    kv = [1000, 1000, 1000, 10, 10, 10]
    nodes = [NodeBudget("a", 2300), NodeBudget("b", 2300)]
    plan = plan_placement(nodes, sizes, kv_bytes_per_layer=[kv, kv], headroom_bytes=0)
    assert [p.num_layers for p in plan] == [2, 4]
    assert plan[1].kv_bytes == 1000 + 3 * 10
    with pytest.raises(PlacementError, match="KV list must have one figure for each of the 6 layers"):
        plan_placement(nodes, sizes, kv_bytes_per_layer=[kv[:5], kv], headroom_bytes=0)


def _facts(name: str, port: int, backends=("mlx-cpu",)) -> NodeFacts:
    return NodeFacts(name=name, source="static", address=f"127.0.0.1:{port}", port=port, usable_memory_bytes=8 * GB,
                     machine_id=name, machine="test", interfaces=(LOOPBACK["127.0.0.1"],), backends=backends)


def _inventory(tmp_path: Path, model: Path, backends: list[str]) -> Path:
    ports = free_ports(len(backends) + 1)
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({
        "cluster": "families", "model": {"path": str(model)}, "serve": {"port": ports[-1], "context_length": 4096},
        "nodes": [{"name": f"w{i + 1}", "host": "127.0.0.1", "port": ports[i], "backend": b}
                  for i, b in enumerate(backends)]}))
    return path


def test_the_plan_reserves_windows_and_says_so(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "gemma", "gemma3_text", sliding_window=256, max_position_embeddings=8192)
    path = _inventory(tmp_path, model_dir, ["auto", "auto"])
    inventory = parse_inventory(yaml.safe_load(path.read_text()), source=path)
    model = read_model_info(model_dir)
    facts = [_facts("w1", inventory.nodes[0].port), _facts("w2", inventory.nodes[1].port)]
    plan = make_plan(inventory, model, read_model_sizes(model_dir), facts)
    per_token = 2 * 2 * 16 * 4     # 2 KV heads x 16, keys and values, float32
    sessions = inventory.max_concurrent
    windowed = sum(per_token * (256 if kind else 4096) * sessions for kind in (True, True, False) * 2)
    assert sum(s.placement.kv_bytes for s in plan.stages) == windowed
    assert "4 layer(s) window 256, 2 layer(s) full" in plan_table(plan, "gemma")


def test_core_ml_refuses_a_family_it_cannot_convert_at_plan_time(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "moe", "qwen3_moe")
    path = _inventory(tmp_path, model_dir, ["ane", "auto"])
    inventory = parse_inventory(yaml.safe_load(path.read_text()), source=path)
    model = read_model_info(model_dir)
    facts = [_facts("w1", inventory.nodes[0].port, ("mlx-gpu", "coreml-ane")), _facts("w2", inventory.nodes[1].port)]
    with pytest.raises(PlacementError, match=r"backend: ane \(on w1\) cannot run this model through Core ML: "
                                             r"model_type 'qwen3_moe' has no Core ML builder"):
        make_plan(inventory, model, read_model_sizes(model_dir), facts)


def test_cluster_plan_refuses_an_unsupported_type_by_name(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "m", "llama")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "model_type": "gemma4_text"}))
    planned = run_cli(["plan", str(_inventory(tmp_path, model_dir, ["auto", "auto"])), "--no-progress"],
                      tmp_path / "home", timeout=120)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "Traceback" not in planned.stderr
    assert "model_type 'gemma4_text' is not served" in planned.stderr
    assert "the nearest supported family is 'gemma3_text'" in planned.stderr


def test_a_draft_model_on_the_coordinators_machine_is_taken_from_its_workers_memory(tmp_path: Path) -> None:
    from cluster.planning.cluster_plan import budgets

    model_dir = write_tiny_model(tmp_path / "llama", "llama")
    path = _inventory(tmp_path, model_dir, ["auto", "auto", "auto"])
    inventory = parse_inventory(yaml.safe_load(path.read_text()), source=path)
    facts = {f.name: f for f in (_facts("w1", 1), _facts("w2", 2), _facts("w3", 3))}
    facts["w3"] = dataclasses.replace(facts["w3"], machine_id="w2")  # w2 and w3 share the coordinator's machine
    reserved = {"w2": (2 * GB, "draft model")}
    shares = budgets(inventory.nodes, facts, reserved)
    assert [b.usable_bytes for b, _ in shares] == [8 * GB, 3 * GB, 3 * GB]
    assert shares[1][1] == "8.00 GB usable - 2.00 GB draft model / 2 workers on one machine"
    plan = make_plan(inventory, read_model_info(model_dir), read_model_sizes(model_dir), list(facts.values()), reserved)
    assert [s.placement.budget_bytes for s in plan.stages] == [8 * GB, 3 * GB, 3 * GB]
