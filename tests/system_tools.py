"""System programs some tests run for real (sshd, Prometheus, iproute2, BWK awk). On Linux, where
.ci/run installs them, a missing one fails the test with what to install: a skip would hide that
the test never ran. Elsewhere (a developer's Mac) it skips with the reason."""

from __future__ import annotations

import shutil
import sys

import pytest


def require(missing: str | None) -> None:
    """`missing`: why the program cannot run here, or None when it can."""
    if missing is None:
        return
    if sys.platform.startswith("linux"):
        pytest.fail(f"{missing}; .ci/run installs it", pytrace=False)
    pytest.skip(missing)


def require_program(name: str, debian_package: str) -> None:
    require(None if shutil.which(name) else f"{name} is not installed (apt-get install {debian_package})")


def require_system_openblas() -> "Path":
    """Debian's pthread OpenBLAS (libopenblas0-pthread), for whichever architecture this is."""
    from pathlib import Path

    found = sorted(Path("/usr/lib").glob("*/openblas-pthread/libopenblas.so.0"))
    require(None if found else "the system OpenBLAS is not installed (apt-get install libopenblas0-pthread)")
    return found[0]
