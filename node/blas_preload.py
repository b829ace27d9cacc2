"""Which BLAS a worker uses on Linux, and the re-exec that gives it to MLX.

MLX's Linux CPU wheel multiplies float32 with a reference BLAS of its own (slow, and busy with
arithmetic where an Apple GPU waits on memory, so batching buys little). The system OpenBLAS
(Debian: libopenblas0-pthread), preloaded, answers MLX's `cblas_sgemm` instead (node/blas.py names
the library that does). The dynamic loader reads LD_PRELOAD only when a program starts, so a worker
that should use it sets LD_PRELOAD and executes itself again (`os.execve`: same pid, same command
line) before MLX is imported.

`BOLTPIPE_BLAS`: unset (or `auto`) for the system OpenBLAS when there is one, `bundled` for MLX's
own, or the path of a BLAS library to preload. Threads: OpenBLAS's default (one per core) for a
lone worker; `worker_thread_env` gives one thread each when several share a machine.

The decisions are pure functions of the candidate paths and the environment; `reexec_with_blas`
applies them to this process.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

CHOICE_ENV = "BOLTPIPE_BLAS"
# Set on the re-exec (to the library preloaded): the process never re-executes itself twice.
REEXEC_MARKER = "BOLTPIPE_BLAS_PRELOADED"
THREADS_ENV = "OPENBLAS_NUM_THREADS"
DEBIAN_PACKAGE = "libopenblas0-pthread"
# Most wanted first: Debian's pthread build (its multiarch directory), then whichever OpenBLAS the
# alternatives system links in, then the plain lib64 layout.
SYSTEM_OPENBLAS = ("/usr/lib/*/openblas-pthread/libopenblas.so.0", "/usr/lib/*/libopenblas.so.0",
                   "/usr/lib64/libopenblas.so.0")


@dataclass(frozen=True)
class BlasChoice:
    library: str | None       # the library a worker preloads; None: MLX's own BLAS (Accelerate on macOS)
    reason: str               # how it was chosen, or why there is none
    error: str | None = None  # BOLTPIPE_BLAS names something a worker cannot use

    def describe(self) -> str:
        if self.library is not None:
            return f"{self.library} ({self.reason})"
        return f"MLX's own BLAS ({self.reason})"


def system_openblas(patterns: Iterable[str] = SYSTEM_OPENBLAS, *, machine: str | None = None,
                    expand: Callable[[str], list[str]] = glob.glob) -> list[str]:
    """The system OpenBLAS libraries present, most wanted first; in a multiarch directory
    (/usr/lib/x86_64-linux-gnu/...) only this machine's architecture."""
    machine = machine or platform.machine()
    found: list[str] = []
    for pattern in patterns:
        for path in sorted(expand(pattern)):
            parts = path.split("/")
            multiarch = parts[3] if len(parts) > 4 and parts[1:3] == ["usr", "lib"] else None
            if multiarch is not None and not multiarch.startswith(machine):
                continue
            if path not in found:
                found.append(path)
    return found


def choose_blas(candidates: list[str], env: Mapping[str, str], *, system: str = sys.platform,
                is_file: Callable[[str], bool] = os.path.isfile) -> BlasChoice:
    """The BLAS a worker with this environment uses, given the system OpenBLAS libraries found."""
    if system == "darwin":
        return BlasChoice(None, "Accelerate, on macOS")
    if not system.startswith("linux"):
        return BlasChoice(None, f"not Linux ({system})")
    wanted = env.get(CHOICE_ENV, "").strip()
    if wanted == "bundled":
        return BlasChoice(None, f"{CHOICE_ENV}=bundled")
    if wanted not in ("", "auto"):
        if is_file(wanted):
            return BlasChoice(wanted, f"{CHOICE_ENV}")
        return BlasChoice(None, f"{CHOICE_ENV} names no file", error=(
            f"{CHOICE_ENV}={wanted}: no such file; give the path of a BLAS library to preload, `bundled` for "
            "MLX's own BLAS, or leave it unset for the system OpenBLAS"))
    if candidates:
        return BlasChoice(candidates[0], "system OpenBLAS")
    return BlasChoice(None, f"{DEBIAN_PACKAGE} not installed: no {' or '.join(SYSTEM_OPENBLAS)}")


def preloaded(env: Mapping[str, str]) -> list[str]:
    """The entries of LD_PRELOAD (the loader splits it at colons and blanks)."""
    return env.get("LD_PRELOAD", "").replace(":", " ").split()


def _same_file(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def with_preload(library: str, env: Mapping[str, str]) -> dict[str, str]:
    """`env` with `library` first in LD_PRELOAD (unchanged when it is there already)."""
    out = dict(env)
    if any(_same_file(entry, library) for entry in preloaded(env)):
        return out
    existing = env.get("LD_PRELOAD", "").strip()
    out["LD_PRELOAD"] = f"{library}:{existing}" if existing else library
    return out


def reexec_environment(choice: BlasChoice, env: Mapping[str, str], global_blas: str | None) -> dict[str, str] | None:
    """The environment to execute this process again with, or None when it runs as it should already:
    nothing to preload, the library preloaded (or this is the re-exec), or some BLAS already answers
    `cblas_sgemm` in this process (`global_blas`: the user preloaded one of their own)."""
    if choice.library is None or env.get(REEXEC_MARKER):
        return None
    if global_blas is not None or any(_same_file(entry, choice.library) for entry in preloaded(env)):
        return None
    out = with_preload(choice.library, env)
    out[REEXEC_MARKER] = choice.library
    return out


def worker_thread_env(workers_on_machine: int, env: Mapping[str, str]) -> dict[str, str]:
    """What to add to the environment of local workers: one OpenBLAS thread each when several share
    this machine (and the user did not say otherwise); a lone worker keeps OpenBLAS's default."""
    if workers_on_machine > 1 and THREADS_ENV not in env:
        return {THREADS_ENV: "1"}
    return {}


def blas_choice(env: Mapping[str, str] | None = None) -> BlasChoice:
    """The BLAS a worker started on this machine with `env` (default: this process's) uses."""
    return choose_blas(system_openblas(), os.environ if env is None else env)


def _global_blas() -> str | None:
    """The library answering a global `cblas_sgemm` lookup in this process, if any (before MLX is
    imported, only a preloaded one can)."""
    from node.blas import BUNDLED, blas_in_use

    found = blas_in_use()
    return None if found == BUNDLED else found


def reexec_with_blas() -> None:
    """At the very start of a worker process, before MLX is imported: execute the same command
    again with the chosen BLAS preloaded, when it is not yet. Returns when nothing needs doing (or
    the re-exec failed: the worker then runs on MLX's own BLAS, with a warning)."""
    choice = blas_choice()
    if choice.error:
        raise SystemExit(f"error: {choice.error}")
    env = reexec_environment(choice, os.environ, _global_blas())
    if env is None or not sys.executable:
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        print(f"warning: could not restart with {choice.library} preloaded ({exc}); using MLX's own BLAS",
              file=sys.stderr, flush=True)
