"""How to reach one node by SSH and where boltpipe lives there."""

from __future__ import annotations

from dataclasses import dataclass

KNOWN_HOSTS_POLICIES = ("strict", "accept-new")
DEFAULT_INSTALL_DIR = "~/.boltpipe"


@dataclass(frozen=True)
class SshTarget:
    node: str                          # inventory node name
    host: str
    port: int = 22
    user: str | None = None            # None: the local user name
    key: str | None = None             # a private key file; None: the agent and ~/.ssh's default keys
    known_hosts: str = "strict"        # "strict": the host key must be known; "accept-new": learn unknown ones
    known_hosts_file: str | None = None  # None: ~/.ssh/known_hosts
    install_dir: str = DEFAULT_INSTALL_DIR
    python: str = "python3"            # the interpreter that creates the node's virtual environment

    @property
    def where(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"
