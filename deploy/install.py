"""Installing boltpipe on a node: this project's wheel, built here, into a virtual environment
under the node's install directory, with its dependencies (pip picks the mlx flavour the
platform needs from the package's markers; CUDA machines get mlx[cuda]).

Idempotent: the node remembers the content hash of the wheel it installed, so an unchanged
wheel is neither uploaded nor installed again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from deploy import pidfile_service
from deploy.shards import file_sha256
from deploy.ssh import NodeConnection, quote
from deploy.transfer import push_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_ITEMS = ("pyproject.toml", "README.md", "cluster", "node", "proto", "deploy")
INSTALLED_RECORD = "installed.json"


class WheelBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Wheel:
    path: Path
    content_hash: str      # of the files inside, so rebuilding unchanged sources gives the same id
    sha256: str            # of the file itself, for the upload's verification


def wheel_content_hash(path: Path) -> str:
    """Zip timestamps differ on every build; the files inside do not."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as wheel:
        for name in sorted(wheel.namelist()):
            digest.update(name.encode() + b"\0" + wheel.read(name) + b"\0")
    return digest.hexdigest()


def build_wheel(out_dir: Path) -> Wheel:
    """Build from a clean copy of the sources, so no stale build/ output of the checkout leaks in."""
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        raise WheelBuildError(
            f"boltpipe's sources are not next to its package ({PROJECT_ROOT}); deploying needs a source checkout "
            "(git clone, then pip install -e .)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="boltpipe-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for item in SOURCE_ITEMS:
            path = PROJECT_ROOT / item
            if path.is_dir():
                shutil.copytree(path, src / item, ignore=ignore)
            elif path.is_file():
                shutil.copy2(path, src / item)
        dist = Path(tmp) / "dist"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
             "--disable-pip-version-check", "-w", str(dist), str(src)],
            capture_output=True, text=True, timeout=300,
        )
        built = sorted(dist.glob("boltpipe-*.whl"))
        if done.returncode != 0 or not built:
            raise WheelBuildError(f"building boltpipe's wheel failed:\n{done.stderr[-3000:]}")
        target = out_dir / built[0].name
        shutil.copy2(built[0], target)
    return Wheel(target, wheel_content_hash(target), file_sha256(target))


def venv_python(node: NodeConnection) -> str:
    return pidfile_service.venv_python(node.install_dir)


async def installed_hash(node: NodeConnection) -> str | None:
    result = await node.run(f"cat {quote(node.install_dir + '/' + INSTALLED_RECORD)} 2>/dev/null", check=False)
    try:
        record = json.loads(str(result.stdout))
    except (json.JSONDecodeError, TypeError):
        return None
    # A record without the venv it describes (someone removed it) means: install again.
    check = await node.run(f"test -x {quote(venv_python(node))}", check=False)
    return record.get("content_hash") if check.exit_status == 0 else None


async def install(node: NodeConnection, wheel: Wheel, *, cuda: bool = False, progress=None) -> bool:
    """Make the node run this wheel. Returns True when something was installed."""
    if await installed_hash(node) == wheel.content_hash:
        node.counters.files_skipped += 1
        return False
    base = node.install_dir
    remote_wheel = f"{base}/wheels/{wheel.path.name}"
    await push_file(node, wheel.path, remote_wheel, wheel.sha256, python=node.target.python, progress=progress)
    extra = " 'mlx[cuda]'" if cuda else ""
    venv = f"{base}/venv"
    # --no-compile: byte-compiling every module of every dependency is half of a fresh install;
    # Python compiles (and caches) what the worker imports when it first starts.
    pip = f"{quote(venv_python(node))} -m pip install --quiet --disable-pip-version-check --no-compile"
    await node.run(
        f"set -e; test -x {quote(venv_python(node))} || {quote(node.target.python)} -m venv {quote(venv)}; "
        f"{pip} --force-reinstall --no-deps {quote(remote_wheel)}; "
        f"{pip} {quote(remote_wheel)}{extra}",
        timeout_s=1800,
    )
    record = json.dumps({"content_hash": wheel.content_hash, "wheel": wheel.path.name})
    await node.run(f"printf '%s\\n' {quote(record)} > {quote(base + '/' + INSTALLED_RECORD)}")
    return True
