"""SSH connections to the nodes (asyncssh): opened in parallel, failures reported per node, all at once.

Host keys are checked against known_hosts. "strict" refuses a host whose key is not there;
"accept-new" learns the key of a host never seen before (and writes it to the file) but still
refuses one whose key changed, as OpenSSH's StrictHostKeyChecking=accept-new does.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from deploy.ssh_target import SshTarget

CONNECT_TIMEOUT_S = 15.0


class SshError(RuntimeError):
    """One or more nodes could not be reached or used; the message names each node."""


class RemoteCommandError(RuntimeError):
    def __init__(self, node: str, command: str, status: int | None, stderr: str):
        self.node, self.status, self.stderr = node, status, stderr
        detail = stderr.strip().splitlines()[-12:]
        super().__init__(f"node {node}: `{command}` failed (exit {status})" + ("".join(f"\n  {l}" for l in detail)))


@dataclass
class TransferCounters:
    """What went over the wire to one node, so a second `cluster up` can prove it sent nothing."""
    bytes_sent: int = 0
    files_sent: int = 0
    files_skipped: int = 0


@dataclass
class NodeConnection:
    target: SshTarget
    conn: asyncssh.SSHClientConnection
    home: str = ""
    counters: TransferCounters = field(default_factory=TransferCounters)
    _sftp: asyncssh.SFTPClient | None = None

    @property
    def node(self) -> str:
        return self.target.node

    @property
    def install_dir(self) -> str:
        """The install directory with `~` expanded against the remote home."""
        path = self.target.install_dir
        if path == "~" or path.startswith("~/"):
            return self.home + path[1:]
        return path

    async def run(self, command: str, *, input: str | None = None, check: bool = True,
                  timeout_s: float | None = 600.0) -> asyncssh.SSHCompletedProcess:
        try:
            result = await self.conn.run(command, input=input, check=False, timeout=timeout_s)
        except asyncssh.TimeoutError:
            raise RemoteCommandError(self.node, _short(command), None, f"no answer within {timeout_s:.0f} s") from None
        except (asyncssh.Error, OSError) as exc:
            raise SshError(f"node {self.node}: the SSH connection broke while running `{_short(command)}`: {exc}") from None
        if check and result.exit_status != 0:
            raise RemoteCommandError(self.node, _short(command), result.exit_status, str(result.stderr or result.stdout or ""))
        return result

    async def sftp(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            self._sftp = await self.conn.start_sftp_client()
        return self._sftp

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self.conn.close()
        try:
            await asyncio.wait_for(self.conn.wait_closed(), 5)
        except (asyncio.TimeoutError, asyncssh.Error, OSError):
            pass


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else command
    return first if len(first) <= 80 else first[:77] + "..."


def _known_hosts_path(target: SshTarget) -> Path:
    return Path(target.known_hosts_file or "~/.ssh/known_hosts").expanduser()


def _host_pattern(target: SshTarget) -> str:
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


def _load_known_hosts(path: Path) -> asyncssh.SSHKnownHosts:
    # Always an explicit object: asyncssh would skip verification if the default file were missing.
    text = path.read_text() if path.is_file() else ""
    return asyncssh.import_known_hosts(text)


async def _learn_host_key(target: SshTarget, path: Path, known: asyncssh.SSHKnownHosts) -> asyncssh.SSHKnownHosts:
    """accept-new: store the key of a host that known_hosts has never seen; leave known hosts alone
    (a changed key must still fail)."""
    trusted, ca, revoked, *_ = known.match(target.host, "", target.port)
    if trusted or ca or revoked:
        return known
    key = await asyncio.wait_for(asyncssh.get_server_host_key(target.host, target.port), CONNECT_TIMEOUT_S)
    if key is None:
        return known
    line = f"{_host_pattern(target)} {key.export_public_key('openssh').decode().strip()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(line)
    return _load_known_hosts(path)


async def connect(target: SshTarget, timeout_s: float = CONNECT_TIMEOUT_S) -> NodeConnection:
    """One connection, or an SshError that says what failed and what to do."""
    path = _known_hosts_path(target)
    user = target.user or getpass.getuser()
    where = f"{user}@{target.host}:{target.port}"
    try:
        known = _load_known_hosts(path)
        if target.known_hosts == "accept-new":
            known = await _learn_host_key(target, path, known)
        options: dict = {"known_hosts": known, "username": user, "connect_timeout": timeout_s,
                         "login_timeout": timeout_s, "keepalive_interval": 15}
        if target.key:
            options["client_keys"] = [os.path.expanduser(target.key)]
            options["agent_path"] = None
        conn = await asyncio.wait_for(asyncssh.connect(target.host, target.port, **options), timeout_s + 5)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise SshError(
            f"node {target.node} ({where}): its host key is not trusted ({exc.reason}). "
            f"Check the key's fingerprint on the machine, then add it with "
            f"`ssh-keyscan -p {target.port} {target.host} >> {path}`, or set `known_hosts: accept-new` in its ssh "
            f"settings to learn keys of hosts never seen before"
        ) from None
    except asyncssh.PermissionDenied as exc:
        how = f"the key {target.key}" if target.key else "the SSH agent and ~/.ssh's default keys"
        raise SshError(
            f"node {target.node} ({where}): authentication failed with {how} ({exc.reason}); "
            f"add the public key to ~{user}/.ssh/authorized_keys there, or set ssh.key / ssh.user"
        ) from None
    except (asyncio.TimeoutError, asyncssh.TimeoutError):
        raise SshError(f"node {target.node} ({where}): no answer within {timeout_s:.0f} s; is the machine on and "
                       "Remote Login (sshd) enabled?") from None
    except ConnectionRefusedError:
        raise SshError(f"node {target.node} ({where}): connection refused; is Remote Login (sshd) enabled there, "
                       "on this port?") from None
    except OSError as exc:
        raise SshError(f"node {target.node} ({where}): unreachable: {exc.strerror or exc}") from None
    except (asyncssh.Error, ValueError) as exc:
        raise SshError(f"node {target.node} ({where}): SSH failed: {exc}") from None
    node = NodeConnection(target, conn)
    try:
        result = await node.run('printf %s "$HOME"', timeout_s=timeout_s)
    except BaseException:
        await node.close()
        raise
    node.home = str(result.stdout).strip()
    return node


async def connect_all(targets: list[SshTarget], timeout_s: float = CONNECT_TIMEOUT_S) -> dict[str, NodeConnection]:
    """Every node at once. If any fails, the others are closed and one error lists every failure."""
    results = await asyncio.gather(*(connect(t, timeout_s) for t in targets), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await asyncio.gather(*(r.close() for r in results if isinstance(r, NodeConnection)))
        for failure in failures:
            if not isinstance(failure, SshError):
                raise failure
        raise SshError("cannot use these nodes by SSH:\n" + "\n".join(f"  - {f}" for f in failures))
    return {r.node: r for r in results}


async def close_all(connections: dict[str, NodeConnection]) -> None:
    await asyncio.gather(*(c.close() for c in connections.values()))


def quote(path: str) -> str:
    return shlex.quote(path)
