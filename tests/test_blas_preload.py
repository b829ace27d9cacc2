"""Which BLAS a worker uses (node/blas_preload.py): the choice from candidate paths and the
environment, the re-exec that preloads it, one OpenBLAS thread per worker when several share a
machine; and real workers that report the system OpenBLAS in GetInfo."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
import pytest

from node import blas_preload
from node.blas_preload import (
    REEXEC_MARKER,
    BlasChoice,
    choose_blas,
    reexec_environment,
    system_openblas,
    with_preload,
    worker_thread_env,
)

PTHREAD = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
ALTERNATIVE = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0"
LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers preload a BLAS on Linux only")


def _fake_glob(files: list[str]):
    import fnmatch

    return lambda pattern: [f for f in files if fnmatch.fnmatch(f, pattern)]


def test_system_openblas_prefers_the_pthread_build_of_this_architecture() -> None:
    files = [ALTERNATIVE, PTHREAD, "/usr/lib/i386-linux-gnu/openblas-pthread/libopenblas.so.0",
             "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0", "/usr/lib64/libopenblas.so.0"]
    assert system_openblas(machine="x86_64", expand=_fake_glob(files)) == [PTHREAD, ALTERNATIVE,
                                                                           "/usr/lib64/libopenblas.so.0"]
    assert system_openblas(machine="aarch64", expand=_fake_glob(files))[0] == (
        "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0")
    assert system_openblas(machine="x86_64", expand=_fake_glob([])) == []


def test_a_linux_worker_takes_the_first_system_openblas() -> None:
    choice = choose_blas([PTHREAD, ALTERNATIVE], {}, system="linux")
    assert choice == BlasChoice(PTHREAD, "system OpenBLAS")
    assert choose_blas([PTHREAD], {"BOLTPIPE_BLAS": "auto"}, system="linux").library == PTHREAD


def test_without_openblas_mlx_keeps_its_own_and_says_which_package_is_missing() -> None:
    choice = choose_blas([], {}, system="linux")
    assert choice.library is None and choice.error is None
    assert choice.reason.startswith("libopenblas0-pthread not installed")
    assert "MLX's own BLAS (libopenblas0-pthread not installed" in choice.describe()


def test_the_user_opts_out_or_names_a_library() -> None:
    assert choose_blas([PTHREAD], {"BOLTPIPE_BLAS": "bundled"}, system="linux") == (
        BlasChoice(None, "BOLTPIPE_BLAS=bundled"))
    mine = choose_blas([PTHREAD], {"BOLTPIPE_BLAS": "/opt/blas/libmine.so"}, system="linux",
                       is_file=lambda p: p == "/opt/blas/libmine.so")
    assert mine.library == "/opt/blas/libmine.so" and mine.error is None
    missing = choose_blas([PTHREAD], {"BOLTPIPE_BLAS": "/no/such.so"}, system="linux", is_file=lambda p: False)
    assert missing.library is None and "BOLTPIPE_BLAS=/no/such.so: no such file" in missing.error


def test_macos_keeps_accelerate() -> None:
    assert choose_blas([PTHREAD], {}, system="darwin").library is None
    assert "Accelerate" in choose_blas([], {}, system="darwin").reason


def test_the_reexec_prepends_the_library_and_marks_the_environment() -> None:
    choice = BlasChoice(PTHREAD, "system OpenBLAS")
    env = reexec_environment(choice, {"PATH": "/bin", "LD_PRELOAD": "/lib/libfaketime.so"}, None)
    assert env == {"PATH": "/bin", "LD_PRELOAD": f"{PTHREAD}:/lib/libfaketime.so", REEXEC_MARKER: PTHREAD}
    assert reexec_environment(choice, {}, None)["LD_PRELOAD"] == PTHREAD


def test_no_reexec_when_nothing_is_to_be_done() -> None:
    choice = BlasChoice(PTHREAD, "system OpenBLAS")
    assert reexec_environment(BlasChoice(None, "BOLTPIPE_BLAS=bundled"), {}, None) is None
    assert reexec_environment(choice, {"LD_PRELOAD": f"/lib/x.so {PTHREAD}"}, None) is None  # already preloaded
    assert reexec_environment(choice, {REEXEC_MARKER: PTHREAD}, None) is None  # this is the re-exec (never twice)
    # Some BLAS of the user's own already answers cblas_sgemm: theirs stays.
    assert reexec_environment(choice, {"LD_PRELOAD": "/opt/mkl/libmkl_rt.so"}, "/opt/mkl/libmkl_rt.so") is None


def test_with_preload_keeps_an_entry_that_is_there() -> None:
    assert with_preload(PTHREAD, {"LD_PRELOAD": PTHREAD}) == {"LD_PRELOAD": PTHREAD}
    assert with_preload(PTHREAD, {"A": "1"}) == {"A": "1", "LD_PRELOAD": PTHREAD}


def test_one_openblas_thread_each_when_several_workers_share_the_machine() -> None:
    assert worker_thread_env(1, {}) == {}
    assert worker_thread_env(3, {}) == {"OPENBLAS_NUM_THREADS": "1"}
    assert worker_thread_env(3, {"OPENBLAS_NUM_THREADS": "4"}) == {}


@LINUX_ONLY
def test_reexec_with_blas_runs_the_same_command_line_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(blas_preload, "system_openblas", lambda: [PTHREAD])
    monkeypatch.setattr(blas_preload, "_global_blas", lambda: None)
    monkeypatch.setattr(blas_preload.os, "execve", lambda *a: calls.append(a))
    for name in ("BOLTPIPE_BLAS", "LD_PRELOAD", REEXEC_MARKER):
        monkeypatch.delenv(name, raising=False)
    blas_preload.reexec_with_blas()
    [(path, argv, env)] = calls
    assert path == sys.executable and argv == [sys.executable, *sys.orig_argv[1:]]
    assert env["LD_PRELOAD"] == PTHREAD and env[REEXEC_MARKER] == PTHREAD and env["PATH"] == os.environ["PATH"]
    monkeypatch.setenv("BOLTPIPE_BLAS", "bundled")
    blas_preload.reexec_with_blas()
    assert len(calls) == 1
    monkeypatch.setenv("BOLTPIPE_BLAS", "/no/such/libblas.so")
    with pytest.raises(SystemExit, match="BOLTPIPE_BLAS=/no/such/libblas.so: no such file"):
        blas_preload.reexec_with_blas()


# --- real worker processes -------------------------------------------------------------------


async def _info(port: int):
    from proto import boltpipe_pb2 as pb
    from proto import boltpipe_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await pb_grpc.WorkerStub(channel).GetInfo(pb.InfoRequest(), timeout=30)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


@pytest.mark.cluster
def test_local_workers_report_the_system_openblas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers started the way `cluster up` starts them: each re-executed itself with the system
    OpenBLAS preloaded (same pid: the ready marker and GetInfo name the process that was started),
    one OpenBLAS thread each. GetInfo's `blas` is filled by node/server.py."""
    from deploy.local import LocalWorkerSpec, start_local_workers, stop_pids
    from tests.cluster_harness import free_ports
    from tests.system_tools import require_system_openblas

    require_system_openblas()
    for name in ("BOLTPIPE_BLAS", "LD_PRELOAD", REEXEC_MARKER, "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    ports = free_ports(2)
    workers = start_local_workers([LocalWorkerSpec(f"b{i}", "127.0.0.1", p) for i, p in enumerate(ports)],
                                  tmp_path / "logs", parent_pid=os.getpid())
    try:
        for worker in workers:
            info = asyncio.run(_info(worker.port))
            assert "openblas" in info.blas, info.blas
            assert info.pid == worker.pid == worker.process.pid
            env = _environ(worker.pid)
            assert env["OPENBLAS_NUM_THREADS"] == "1"
            assert env["LD_PRELOAD"].split(":")[0] == blas_preload.blas_choice().library
    finally:
        stop_pids([w.pid for w in workers])


@LINUX_ONLY
@pytest.mark.cluster
def test_a_lone_worker_that_opts_out_keeps_mlx_blas_and_watches_its_parent(tmp_path: Path) -> None:
    """BOLTPIPE_BLAS=bundled: no re-exec, MLX's bundled BLAS. And a re-executed worker still stops
    when the process that started it (--parent-pid) is gone."""
    from node.blas import BUNDLED
    from proto import WORKER_READY_MARKER
    from tests.cluster_harness import free_ports

    bundled_port, watched_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", REEXEC_MARKER, "BOLTPIPE_BLAS")}
    lone = subprocess.Popen([sys.executable, "-m", "node", "--port", str(bundled_port), "--no-advertise"],
                            env=env | {"BOLTPIPE_BLAS": "bundled"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    # A parent that starts a worker, waits until it is ready and exits.
    parent = subprocess.run([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        f"w = subprocess.Popen([sys.executable, '-m', 'node', '--port', '{watched_port}', '--no-advertise',"
        " '--parent-pid', str(os.getpid())], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)\n"
        "print(w.stdout.readline().strip(), w.pid, flush=True)\n")],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    try:
        info = None
        for _ in range(600):
            try:
                info = asyncio.run(_info(bundled_port))
                break
            except grpc.aio.AioRpcError:
                time.sleep(0.1)
        assert info is not None and info.blas == BUNDLED and info.pid == lone.pid
        ready, pid = parent.stdout.strip().rsplit(maxsplit=1)
        assert ready.startswith(WORKER_READY_MARKER) and ready.endswith(f"pid={pid}"), parent.stdout + parent.stderr
        pid = int(pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"worker {pid} still runs after its parent exited")
    finally:
        lone.kill()
        lone.wait()
