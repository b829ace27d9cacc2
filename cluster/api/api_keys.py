"""API keys of the HTTP API: which keys are accepted, and whether any are needed.

Keys come from the inventory (`serve.api_keys`) and the environment (BOLTPIPE_API_KEYS, comma
separated). With none configured, the API is open only while it listens on loopback; beyond
loopback a key is generated once per cluster and kept (readable only by its user) in
BOLTPIPE_HOME/secrets/<cluster>/api-key, so nobody else on the network can use the model.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from cluster import paths
from cluster.inventory import LOCAL_HOSTS, Inventory

ENV_KEYS = "BOLTPIPE_API_KEYS"


def generated_key_path(inventory: Inventory) -> Path:
    return paths.secrets_dir(inventory) / "api-key"


def configured_keys(inventory: Inventory) -> list[str]:
    from_env = [k.strip() for k in os.environ.get(ENV_KEYS, "").split(",") if k.strip()]
    return list(inventory.api_keys) + from_env


def server_keys(inventory: Inventory) -> tuple[list[str], str | None]:
    """(accepted keys, a note for the person) for the API `cluster up` serves. Empty: no key needed."""
    keys = configured_keys(inventory)
    if keys or inventory.serve_host in LOCAL_HOSTS:
        return keys, None
    path = generated_key_path(inventory)
    if not path.exists():
        paths.write_private(path, "sk-boltpipe-" + secrets.token_urlsafe(32) + "\n")
    key = path.read_text().strip()
    return [key], (f"the API listens on {inventory.serve_host}, beyond loopback, and serve.api_keys is not set: "
                   f"clients must send `Authorization: Bearer <key>` with the key in {path}")


def client_key(inventory: Inventory) -> str | None:
    """The key boltpipe's own commands (generate, chat) send to a cluster that is up."""
    keys = configured_keys(inventory)
    if keys:
        return keys[0]
    path = generated_key_path(inventory)
    return path.read_text().strip() if path.exists() else None


def key_accepted(presented: str, keys: list[str]) -> bool:
    # Compared in constant time, every key, so timing says nothing about which key was close.
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found
