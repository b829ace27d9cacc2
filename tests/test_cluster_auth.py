"""Strangers are kept out. A real cluster with mutual TLS on every link (`security.tls: on`) and API
keys serves the official `openai` client; direct gRPC calls to its workers without the cluster
secret, with a wrong one, without a certificate or with a certificate of another CA are refused,
and the workers go on serving."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from cluster.api.api_keys import server_keys
from cluster.credentials import issue, make_ca
from cluster.inventory import parse_inventory
from node.cluster_auth import ClusterAuth, TlsMaterial
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc
from tests.api_cluster import ApiCluster, start_api_cluster, stop_api_cluster
from tests.cluster_secret import secret_metadata, secrets_dir
from tests.reference import reference_text, tokenizer_for

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

KEY = "sk-test-0123456789abcdef"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def secured(tmp_path_factory, smollm2_dir: Path):
    directory = tmp_path_factory.mktemp("secured")
    cluster = start_api_cluster(directory, smollm2_dir, serve={"api_keys": [KEY], "context_length": 1024},
                                extra={"security": {"tls": "on"}})
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


def _secrets(api: ApiCluster) -> Path:
    return secrets_dir(api.inventory, api.home)


def _material(api: ApiCluster, who: str) -> TlsMaterial:
    return TlsMaterial(*((_secrets(api) / name).read_bytes() for name in ("ca.pem", f"{who}.pem", f"{who}.key")))


def _get_info(auth: ClusterAuth, address: str) -> pb.NodeInfo:
    async def call() -> pb.NodeInfo:
        async with auth.tls_channel(address) if auth.tls else auth.channel(address) as channel:
            return await pb_grpc.WorkerStub(channel).GetInfo(pb.InfoRequest(), timeout=10)

    return asyncio.run(call())


def _results_stream(auth: ClusterAuth, address: str) -> None:
    async def call() -> None:
        async with auth.tls_channel(address) as channel:
            stream = pb_grpc.WorkerStub(channel).Results(pb.ResultsRequest(reply_to="stranger"), timeout=10)
            await stream.initial_metadata()
            async for _ in stream:
                break

    asyncio.run(call())


def test_the_cluster_serves_through_mutual_tls_with_an_api_key(secured: ApiCluster, smollm2_dir: Path) -> None:
    client = openai.OpenAI(base_url=secured.base_url, api_key=KEY)
    reply = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=24, temperature=0,
                                           messages=[{"role": "user", "content": QUESTION}])
    ids = tokenizer_for(smollm2_dir).encode_chat([{"role": "user", "content": QUESTION}])
    assert reply.choices[0].message.content == reference_text(smollm2_dir, ids, 24)


def test_api_without_or_with_a_wrong_key_gets_401(secured: ApiCluster) -> None:
    for key in ("", "sk-wrong-key-000000"):
        client = openai.OpenAI(base_url=secured.base_url, api_key=key or "x", max_retries=0,
                               default_headers={} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=4,
                                           messages=[{"role": "user", "content": "Hi"}])
        assert caught.value.status_code == 401
        assert caught.value.body["code"] == "invalid_api_key"
    raw = httpx.post(f"{secured.base_url}/chat/completions", json={"messages": []}, timeout=10)
    assert raw.status_code == 401 and raw.json()["error"]["type"] == "invalid_request_error"
    # Probes and Prometheus need no key.
    assert httpx.get(f"{secured.inventory.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{secured.inventory.url}/metrics", timeout=10).status_code == 200


def test_calls_without_the_secret_or_with_a_wrong_one_are_unauthenticated(secured: ApiCluster) -> None:
    address = secured.inventory.nodes[0].address
    cert = _material(secured, "coordinator")
    secret = secret_metadata(secured.inventory, secured.home)[0][1]
    for wrong in ("", "not-the-secret"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _get_info(ClusterAuth(wrong, cert, tls_on_loopback=True), address)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _results_stream(ClusterAuth(wrong, cert, tls_on_loopback=True), address)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _get_info(ClusterAuth(secret, cert, tls_on_loopback=True), address).loaded


def test_clients_without_a_cluster_certificate_are_refused(secured: ApiCluster, tmp_path: Path) -> None:
    address = secured.inventory.nodes[1].address
    secret = secret_metadata(secured.inventory, secured.home)[0][1]
    other_ca, other_key = make_ca("somebody-else")
    stranger_cert, stranger_key = issue(other_ca, other_key, "stranger")
    # A certificate of another CA, even with the right secret: the handshake fails.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _get_info(ClusterAuth(secret, TlsMaterial(_material(secured, "worker").ca_pem, stranger_cert, stranger_key),
                              tls_on_loopback=True), address)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # Trusting the other CA does not help either: the worker's certificate is not signed by it.
    with pytest.raises(grpc.aio.AioRpcError):
        _get_info(ClusterAuth(secret, TlsMaterial(other_ca, stranger_cert, stranger_key), tls_on_loopback=True), address)
    # No TLS at all.
    with pytest.raises(grpc.aio.AioRpcError):
        _get_info(ClusterAuth(secret), address)
    # The workers go on serving the cluster.
    client = openai.OpenAI(base_url=secured.base_url, api_key=KEY)
    assert client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=4,
                                          messages=[{"role": "user", "content": "Hi"}]).choices[0].message.content


def test_credentials_are_readable_only_by_their_user(secured: ApiCluster) -> None:
    directory = _secrets(secured)
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for config in (secured.home / "run").glob("*/logs/worker-*.json"):
        assert stat.S_IMODE(config.stat().st_mode) == 0o600, config


def test_an_api_beyond_loopback_gets_a_generated_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BOLTPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BOLTPIPE_API_KEYS", raising=False)
    data = {"model": {"path": str(tmp_path)}, "nodes": [{"name": "w1", "port": 50061}]}
    loopback = parse_inventory(data | {"serve": {"host": "127.0.0.1"}}, source=tmp_path / "a.yaml")
    assert server_keys(loopback) == ([], None)  # open on loopback only
    wide = parse_inventory(data | {"serve": {"host": "10.0.0.5"}}, source=tmp_path / "b.yaml")
    keys, note = server_keys(wide)
    assert len(keys) == 1 and keys[0].startswith("sk-boltpipe-") and "Authorization: Bearer" in note
    assert server_keys(wide)[0] == keys  # kept, not made anew
    key_file = next((tmp_path / "home" / "secrets").glob("*/api-key"))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    monkeypatch.setenv("BOLTPIPE_API_KEYS", "sk-from-the-environment")
    assert server_keys(wide) == (["sk-from-the-environment"], None)


def test_a_hand_started_worker_joins_with_exported_credentials(tmp_path: Path, smollm2_dir: Path) -> None:
    """`cluster credentials` writes what `cluster worker --secret-file --tls-dir` needs; the
    coordinator's calls then get through, and a worker holding another cluster's secret is named."""
    import subprocess
    import sys

    import yaml

    from deploy.local import stop_pids
    from tests.cli_runner import cli_env, run_cli
    from tests.cluster_harness import free_ports

    home = tmp_path / "home"
    port, other_port = free_ports(2)
    # 127.0.0.2: loopback, so no traffic leaves the machine, but not "this machine" to the inventory,
    # so `cluster up` / `cluster plan` treat it as a static node someone started.
    inventory = tmp_path / "hand.yaml"
    inventory.write_text(yaml.safe_dump({"cluster": "hand", "model": {"path": str(smollm2_dir)},
                                         "nodes": [{"name": "mini1", "host": "127.0.0.2", "port": port}]}))
    creds = tmp_path / "creds"
    made = run_cli(["credentials", str(inventory), str(creds)], home)
    assert made.returncode == 0 and "--secret-file" in made.stdout, made.stdout + made.stderr
    assert all(stat.S_IMODE((creds / f).stat().st_mode) == 0o600 for f in ("cluster-secret", "worker.key"))
    (tmp_path / "other-secret").write_text("another-clusters-secret\n")
    workers = [subprocess.Popen([sys.executable, "-m", "node", "--host", "127.0.0.2", "--port", str(p), "--name", "mini1",
                                 "--no-advertise", "--secret-file", str(secret), "--tls-dir", str(creds)],
                                env=cli_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
               for p, secret in ((port, creds / "cluster-secret"), (other_port, tmp_path / "other-secret"))]
    try:
        plan = run_cli(["plan", str(inventory), "--json"], home, timeout=120)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert yaml.safe_load(plan.stdout)["stages"][0]["node"] == "mini1"
        inventory.write_text(inventory.read_text().replace(str(port), str(other_port)))
        refused = run_cli(["plan", str(inventory)], home, timeout=120)
        assert refused.returncode == 2 and "mini1" in refused.stderr and "UNAUTHENTICATED" in refused.stderr, \
            refused.stderr
    finally:
        stop_pids([w.pid for w in workers])
