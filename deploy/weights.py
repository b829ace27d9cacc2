"""Getting each node the weights of its own layers, and only those.

Three ways, chosen by the inventory: a shard cut here from the model and pushed (content
addressed, so an unchanged shard is never sent twice); a model directory already on the node
(nothing moves); or a Hugging Face repository the node downloads from itself, fetching only the
weight files that hold its layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deploy.shards import SHARD_MANIFEST, ShardManifest, ensure_shard, file_sha256, read_manifest
from deploy.ssh import NodeConnection, quote
from deploy.transfer import push_file

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class StageWeights:
    node: str
    layer_start: int
    layer_end: int
    remote_dir: str            # the directory the node's worker loads its slice from
    pushed_bytes: int = 0
    total_bytes: int = 0       # of the shard (or 0 when nothing was pushed)


def local_shard(model_dir: Path, layer_start: int, layer_end: int) -> tuple[Path, ShardManifest]:
    shard = ensure_shard(model_dir, layer_start, layer_end)
    return shard, read_manifest(shard)


async def push_shard(node: NodeConnection, shard: Path, manifest: ShardManifest, *, python: str,
                     progress: ProgressFn | None = None) -> StageWeights:
    """Push every file of the shard into <install_dir>/models/<shard id>/ (skipping what is there)."""
    remote_dir = f"{node.install_dir}/models/{manifest.content_id}"
    before = node.counters.bytes_sent
    for name, digest in sorted(manifest.files.items()):
        await push_file(node, shard / name, f"{remote_dir}/{name}", digest.sha256, python=python, progress=progress)
    # The manifest last: the worker treats a directory with it as a whole shard.
    manifest_file = shard / SHARD_MANIFEST
    await push_file(node, manifest_file, f"{remote_dir}/{SHARD_MANIFEST}", file_sha256(manifest_file), python=python)
    return StageWeights(node.node, manifest.layer_start, manifest.layer_end, remote_dir,
                        node.counters.bytes_sent - before, manifest.total_bytes)


async def check_remote_model(node: NodeConnection, path: str) -> str:
    """A model the inventory says is already on the node: it must be there (config.json at least)."""
    result = await node.run(f"test -f {quote(path + '/config.json')}", check=False)
    if result.exit_status != 0:
        raise FileNotFoundError(f"node {node.node}: model_path {path} holds no config.json; copy the model there "
                                "or remove model_path so that boltpipe pushes the node's shard")
    return path


async def fetch_from_hub(node: NodeConnection, venv_python: str, repo: str, layer_start: int, layer_end: int,
                         num_layers: int, revision: str | None = None) -> str:
    """The node downloads the files holding its layers itself (deploy/hf_fetch.py runs there)."""
    dest = f"{node.install_dir}/models/hf/{repo.replace('/', '--')}/{layer_start}-{layer_end}"
    command = (f"{quote(venv_python)} -m deploy.hf_fetch --repo {quote(repo)} --dest {quote(dest)} "
               f"--layers {layer_start} {layer_end} --num-layers {num_layers}"
               + (f" --revision {quote(revision)}" if revision else ""))
    await node.run(command, timeout_s=24 * 3600)
    return dest
