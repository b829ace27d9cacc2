"""SSH connections and uploads against a real OpenSSH server: per-node errors, host-key
policies, skipped unchanged files, resumed uploads, verified content."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from deploy.local import stop_pids
from deploy.ssh import SshError, connect_all
from deploy.ssh_target import SshTarget
from deploy.shards import file_sha256
from deploy.transfer import push_file
from tests.sshd_host import keygen, sshd_available, start_sshd
from tests.system_tools import require



@pytest.fixture(scope="module", autouse=True)
def _sshd_installed() -> None:
    require(sshd_available())


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    base = tmp_path_factory.mktemp("ssh")
    key = keygen(base / "client")
    host = start_sshd("n1", base / "n1", [key])
    known = base / "known_hosts"
    known.write_text(host.known_hosts_line)
    try:
        yield base, key, host, known
    finally:
        stop_pids([host.pid])


def _target(name, host, key, known, **kw) -> SshTarget:
    return SshTarget(name, "127.0.0.1", host.port, key=str(key), known_hosts_file=str(known), **kw)


def test_every_failing_node_is_named_in_one_error(sshd, tmp_path):
    base, key, host, known = sshd
    wrong_key = keygen(tmp_path / "wrong")
    targets = [
        _target("good", host, key, known),
        _target("wrongkey", host, wrong_key, known),
        _target("strangehost", host, key, tmp_path / "empty_known_hosts"),
        SshTarget("offline", "127.0.0.1", 1, key=str(key), known_hosts_file=str(known)),
    ]
    with pytest.raises(SshError) as err:
        asyncio.run(connect_all(targets, timeout_s=10))
    text = str(err.value)
    assert "good" not in text.split("\n", 1)[1]
    assert "node wrongkey" in text and "authentication failed" in text
    assert "node strangehost" in text and "host key is not trusted" in text and "ssh-keyscan" in text
    assert "node offline" in text and "connection refused" in text


def test_accept_new_learns_a_new_host_but_refuses_a_changed_key(sshd, tmp_path):
    base, key, host, known = sshd
    learned = tmp_path / "known_hosts"

    async def connect_once(known_file):
        nodes = await connect_all([_target("n", host, key, known_file, known_hosts="accept-new")], timeout_s=10)
        await nodes["n"].close()

    asyncio.run(connect_once(learned))
    assert learned.read_text() == host.known_hosts_line  # the key the server really has
    asyncio.run(connect_once(learned))                   # known now: no second line
    assert learned.read_text().count("\n") == 1
    changed = tmp_path / "changed_known_hosts"
    other = keygen(tmp_path / "other_host_key").with_suffix(".pub").read_text().split()
    changed.write_text(f"[127.0.0.1]:{host.port} {other[0]} {other[1]}\n")
    with pytest.raises(SshError, match="host key is not trusted"):
        asyncio.run(connect_once(changed))


def test_push_skips_unchanged_resumes_partial_and_verifies(sshd, tmp_path):
    base, key, host, known = sshd
    local = tmp_path / "blob.bin"
    local.write_bytes(os.urandom(3 * (1 << 20) + 12345))
    digest = file_sha256(local)
    remote = str(tmp_path / "remote" / "blob.bin")

    async def scenario():
        nodes = await connect_all([_target("n", host, key, known)], timeout_s=10)
        node = nodes["n"]
        try:
            # An upload interrupted after 1 MiB: the next push sends only the rest.
            Path(remote).parent.mkdir(parents=True)
            Path(remote + ".partial").write_bytes(local.read_bytes()[: 1 << 20])
            assert await push_file(node, local, remote, digest, python=sys.executable)
            assert node.counters.bytes_sent == local.stat().st_size - (1 << 20)
            assert Path(remote).read_bytes() == local.read_bytes()
            assert not Path(remote + ".partial").exists()
            # Unchanged: nothing sent.
            sent = node.counters.bytes_sent
            assert not await push_file(node, local, remote, digest, python=sys.executable)
            assert node.counters.bytes_sent == sent and node.counters.files_skipped == 1
            # A corrupt partial is detected by the hash and replaced by a whole upload.
            Path(remote + ".sha256").unlink()
            Path(remote + ".partial").write_bytes(b"garbage" * 1000)
            assert await push_file(node, local, remote, digest, python=sys.executable)
            assert Path(remote).read_bytes() == local.read_bytes()
        finally:
            await node.close()

    asyncio.run(scenario())
