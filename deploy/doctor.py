"""`cluster doctor`: the preflight probe on this machine, plus what only this machine can test:
multicast DNS (a service registered and found again), MLX and its device, the BLAS a worker would
use, coremltools."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from deploy.probe import PROBE_SCRIPT, Finding, NodeProbe, check_node, parse_probe
from deploy.text_table import format_rows

DOCTOR_SERVICE_TYPE = "_boltpipe-doctor._tcp.local."
_MDNS_HINT = (
    "multicast DNS (UDP 5353 to 224.0.0.251) does not come back here: allow it in the firewall "
    "(macOS: System Settings > Network > Firewall; Linux: e.g. `sudo ufw allow 5353/udp`) and check that an "
    "interface with multicast is up; or give every node's host and port in the inventory, so no discovery is needed"
)


def run_probe(python: str, install_dir: str, timeout_s: float = 60.0) -> NodeProbe:
    """PROBE_SCRIPT on this machine, the way `cluster up` runs it on a node (sh, script on stdin)."""
    env = dict(os.environ, BOLTPIPE_PYTHON=python, BOLTPIPE_INSTALL_DIR=install_dir)
    try:
        out = subprocess.run(["sh", "-s"], input=PROBE_SCRIPT, env=env, capture_output=True, text=True,
                             timeout=timeout_s).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return parse_probe(out)


async def _mdns_roundtrip(timeout_s: float) -> str:
    """Registers a test service with one zeroconf instance and browses and resolves it with another,
    so the packets really go through the multicast sockets. Returns what was resolved."""
    from zeroconf import ServiceInfo, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    label = f"doctor-{os.getpid()}-{secrets.token_hex(3)}"
    wanted = f"{label}.{DOCTOR_SERVICE_TYPE}"
    info = ServiceInfo(DOCTOR_SERVICE_TYPE, wanted, port=9, addresses=[socket.inet_aton("127.0.0.1")],
                       properties={"check": "doctor"}, server=f"{label}.local.")
    seen = asyncio.Event()
    loop = asyncio.get_running_loop()

    # zeroconf calls handlers with these keyword names.
    def on_change(zeroconf, service_type: str, name: str, state_change) -> None:
        if name == wanted and state_change is ServiceStateChange.Added:
            loop.call_soon_threadsafe(seen.set)

    publisher, finder, browser = AsyncZeroconf(), AsyncZeroconf(), None
    try:
        await asyncio.wait_for(await publisher.async_register_service(info), timeout_s)
        browser = AsyncServiceBrowser(finder.zeroconf, DOCTOR_SERVICE_TYPE, handlers=[on_change])
        await asyncio.wait_for(seen.wait(), timeout_s)
        resolved = AsyncServiceInfo(DOCTOR_SERVICE_TYPE, wanted)
        if not await resolved.async_request(finder.zeroconf, int(timeout_s * 1000)):
            raise TimeoutError("browsed but not resolved")
        return f"{resolved.port} at {', '.join(resolved.parsed_addresses()) or '?'}"
    finally:
        if browser is not None:
            await browser.async_cancel()
        try:
            await asyncio.wait_for(await publisher.async_unregister_service(info), timeout_s)
        except Exception:  # the goodbye is a courtesy; the record expires anyway
            pass
        await finder.async_close()
        await publisher.async_close()


def check_mdns(timeout_s: float = 5.0) -> Finding:
    start = time.monotonic()
    try:
        resolved = asyncio.run(_mdns_roundtrip(timeout_s))
    except (TimeoutError, asyncio.TimeoutError):
        return Finding("mdns", False, f"test service not found within {timeout_s:g} s", _MDNS_HINT)
    except Exception as exc:  # zeroconf raises OSError and its own errors when sockets fail
        return Finding("mdns", False, f"{type(exc).__name__}: {exc}", _MDNS_HINT)
    return Finding("mdns", True, f"registered and resolved {DOCTOR_SERVICE_TYPE} (port {resolved}) "
                                 f"in {time.monotonic() - start:.1f} s")


def check_mlx() -> Finding:
    try:
        import mlx.core as mx
    except Exception as exc:  # a broken wheel fails with more than ImportError
        hint = "`pip install mlx`" if sys.platform == "darwin" else "`pip install 'mlx[cpu]'` (or mlx[cuda])"
        return Finding("mlx", False, f"not importable ({exc})", f"workers need MLX: {hint} in this environment",
                       fatal=True, expected="mlx importable")
    found = f"mlx {getattr(mx, '__version__', '?')}, default device {mx.default_device()}"
    if sys.platform == "darwin":
        if not mx.metal.is_available():
            return Finding("mlx", False, found + ", Metal not available",
                           "MLX runs on the CPU here; Metal needs Apple silicon and the macOS wheel of mlx")
        return Finding("mlx", True, found + ", Metal available")
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        found += ", CUDA available"
    return Finding("mlx", True, found)


def check_blas(env: dict[str, str] | None = None) -> Finding:
    """Which BLAS a worker started on this machine would give MLX (node/blas_preload.py)."""
    from node.blas_preload import CHOICE_ENV, DEBIAN_PACKAGE, THREADS_ENV, blas_choice

    choice = blas_choice(env)
    if choice.error:
        return Finding("blas", False, choice.error, f"fix or unset {CHOICE_ENV}: a worker refuses to start with it",
                       fatal=True)
    if choice.library is not None:
        threads = (os.environ if env is None else env).get(THREADS_ENV)
        threads = f"{THREADS_ENV}={threads}" if threads else "one thread per worker when several share the machine"
        return Finding("blas", True, f"{choice.describe()}; {threads}")
    if sys.platform.startswith("linux") and choice.reason.startswith(DEBIAN_PACKAGE):
        return Finding("blas", False, choice.describe(),
                       f"`sudo apt-get install {DEBIAN_PACKAGE}`: float32 matrix products run several times faster "
                       "on it, and batch")
    return Finding("blas", True, choice.describe())


def check_coremltools() -> Finding:
    import importlib.util

    if importlib.util.find_spec("coremltools") is None:
        if sys.platform == "darwin":
            return Finding("coremltools", False, "not installed",
                           "reinstall boltpipe (coremltools==9.0 is one of its dependencies) for backend: ane")
        return Finding("coremltools", True, "not installed (backend: ane runs only on macOS)")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about optional frameworks it did not find
        try:
            import coremltools
        except Exception as exc:
            return Finding("coremltools", False, f"installed but not importable ({exc})",
                           "reinstall it: `pip install --force-reinstall coremltools`")
    return Finding("coremltools", True, f"coremltools {coremltools.__version__}")


@dataclass
class DoctorReport:
    probe: NodeProbe
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not any(f.fatal for f in self.findings)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "checks": [dict(asdict(f), status=f.status) for f in self.findings],
            "probe": asdict(self.probe),
        }


def run_doctor(python: str, install_dir: str, *, mdns_timeout_s: float = 5.0, want_backend: str = "auto") -> DoctorReport:
    probe = run_probe(python, install_dir)
    findings = check_node(probe, want_backend=want_backend)
    findings += [check_mdns(mdns_timeout_s), check_mlx(), check_blas(), check_coremltools()]
    return DoctorReport(probe, findings)


def doctor_table(findings: list[Finding]) -> str:
    rows = [["check", "status", "found", "hint"]]
    rows += [[f.check, f.status, f.found, f.hint] for f in findings]
    return format_rows(rows)
