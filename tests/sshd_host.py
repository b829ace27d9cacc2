"""Real OpenSSH servers standing in for remote machines: each one on a free loopback port with
its own host key, its own authorized key (generated here) and, in the tests, its own install
directory. The test ends every sshd it starts, by pid.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.local import stop_pids

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_available() -> str | None:
    """None when sshd can run here; otherwise why not."""
    if not os.path.exists(SSHD):
        return "OpenSSH server not installed (apt-get install openssh-server)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen not installed"
    return None


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SshHost:
    """One sshd. `known_hosts_line` is what a client that trusts this host has in known_hosts."""
    name: str
    port: int
    directory: Path
    pid: int
    host_key: Path

    @property
    def known_hosts_line(self) -> str:
        key = (self.host_key.with_suffix(".pub")).read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n"


def start_sshd(name: str, directory: Path, authorized: list[Path], *, path_env: str | None = None,
               home_env: str | None = None) -> SshHost:
    """An sshd for the current user on 127.0.0.1. `path_env` replaces PATH in its sessions (a
    machine without some program); `home_env` gives them another home (no shell start-up files of
    this machine's user, which could put programs back on PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key = keygen(directory / "host_ed25519")
    auth = directory / "authorized_keys"
    auth.write_text("".join(p.with_suffix(".pub").read_text() for p in authorized))
    auth.chmod(0o600)
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    except OSError:
        pass  # not root: sshd then says what it misses, in its log

    port = free_port()
    config = directory / "sshd_config"
    lines = [
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {auth}", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
        f"AllowUsers {getpass.getuser()}", "Subsystem sftp internal-sftp", "LogLevel VERBOSE", "MaxSessions 50",
        "MaxStartups 50",
    ]
    settings = [f"PATH={path_env}"] if path_env is not None else []
    settings += [f"HOME={home_env}"] if home_env is not None else []
    if settings:
        lines.append("SetEnv " + " ".join(settings))
    config.write_text("\n".join(lines) + "\n")
    log = open(directory / "sshd.log", "wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    host = SshHost(name, port, directory, process.pid, host_key)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd for {name} exited: {(directory / 'sshd.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return host
        except OSError:
            time.sleep(0.05)
    stop_pids([process.pid])
    raise RuntimeError(f"sshd for {name} did not listen on port {port}")


def path_without(programs: tuple[str, ...], directory: Path) -> str:
    """A PATH directory with links to every program of /usr/bin and /bin except those named
    (prefix match): a machine where e.g. no python is installed."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in (Path("/usr/local/bin"), Path("/usr/bin"), Path("/bin")):
        if not source.is_dir():
            continue
        for program in source.iterdir():
            if program.name.startswith(programs) or (directory / program.name).exists():
                continue
            (directory / program.name).symlink_to(program)
    return str(directory)
