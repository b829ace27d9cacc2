"""Pushing files to a node over SFTP: skipped when the node already holds the same content,
resumed where an interrupted upload stopped, verified by hash before it counts.

A finished file `F` has a sidecar `F.sha256` written only after its content was verified, so
"already there" costs one small read, not a hash of gigabytes. Bytes in flight go to
`F.partial`; the next attempt continues from its size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import asyncssh

from deploy.ssh import NodeConnection, RemoteCommandError, quote

CHUNK = 1 << 20
ProgressFn = Callable[[int], None]


async def _read_small(sftp: asyncssh.SFTPClient, path: str) -> str | None:
    try:
        async with sftp.open(path, "r") as f:
            return str(await f.read(4096))
    except (asyncssh.SFTPError, OSError):
        return None


async def _size(sftp: asyncssh.SFTPClient, path: str) -> int | None:
    try:
        return (await sftp.stat(path)).size
    except (asyncssh.SFTPError, OSError):
        return None


async def remote_sha256(node: NodeConnection, path: str, python: str) -> str:
    """Hash on the node with its own Python (present on every node that passed preflight)."""
    script = ("import hashlib,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\n"
              "for b in iter(lambda: f.read(1<<20), b''): h.update(b)\nprint(h.hexdigest())")
    result = await node.run(f"{quote(python)} -c {quote(script)} {quote(path)}")
    return str(result.stdout).strip()


async def push_file(node: NodeConnection, local: Path, remote: str, sha256: str, *, python: str,
                    progress: ProgressFn | None = None) -> bool:
    """Make `remote` hold `local`'s content. Returns True when bytes were sent."""
    sftp = await node.sftp()
    size = local.stat().st_size
    if (await _read_small(sftp, remote + ".sha256") or "").strip() == sha256 and await _size(sftp, remote) == size:
        node.counters.files_skipped += 1
        if progress:
            progress(size)
        return False
    parent = remote.rsplit("/", 1)[0]
    await node.run(f"mkdir -p {quote(parent)}")
    partial = remote + ".partial"
    for attempt in range(2):
        offset = await _size(sftp, partial) or 0
        if offset > size:
            offset = 0
        if progress and offset:
            progress(offset)
        mode = "ab" if offset else "wb"
        with open(local, "rb") as src:
            src.seek(offset)
            async with sftp.open(partial, mode) as dst:
                while block := src.read(CHUNK):
                    await dst.write(block)
                    node.counters.bytes_sent += len(block)
                    if progress:
                        progress(len(block))
        if await remote_sha256(node, partial, python) == sha256:
            break
        await sftp.remove(partial)  # a corrupt partial: start again from zero, once
    else:
        raise RemoteCommandError(node.node, f"upload {local.name}", None, "the uploaded file's hash does not match")
    await sftp.posix_rename(partial, remote)
    async with sftp.open(remote + ".sha256", "w") as f:
        await f.write(sha256 + "\n")
    node.counters.files_sent += 1
    return True
