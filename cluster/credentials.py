"""A cluster's credentials, made once by `cluster up` and kept in BOLTPIPE_HOME/secrets/<cluster>/
(a directory only its user can enter): the cluster secret every gRPC call carries, and a CA of the
cluster's own with the certificates it signed for the workers and for the coordinator.

Workers get the secret and, for links beyond loopback (or every link with `security.tls: on`), a
worker certificate; they trust only this CA, so a client with any other certificate is refused.
"""

from __future__ import annotations

import datetime
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.inventory import Inventory, NodeSpec
from cluster.paths import secrets_dir, write_private
from node.cluster_auth import WORKER_TLS_NAME, ClusterAuth, TlsMaterial, is_loopback_address

VALID_DAYS = 3650


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "boltpipe"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cluster: str) -> tuple[bytes, bytes]:
    """(CA certificate, CA key) in PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(f"boltpipe cluster {cluster} CA"))
            .issuer_name(_name(f"boltpipe cluster {cluster} CA")).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue(ca_cert_pem: bytes, ca_key_pem: bytes, common_name: str) -> tuple[bytes, bytes]:
    """A certificate for both ends of a link (workers are servers and, to the next stage, clients),
    naming WORKER_TLS_NAME, which every peer expects."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(WORKER_TLS_NAME)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _ensure(directory: Path, cluster: str) -> None:
    if not (directory / "cluster-secret").exists():
        write_private(directory / "cluster-secret", secrets.token_urlsafe(32) + "\n")
    if not (directory / "ca.pem").exists():
        ca_cert, ca_key = make_ca(cluster)
        write_private(directory / "ca.key", ca_key.decode())
        for who in ("worker", "coordinator"):
            cert, key = issue(ca_cert, ca_key, f"boltpipe {cluster} {who}")
            write_private(directory / f"{who}.pem", cert.decode())
            write_private(directory / f"{who}.key", key.decode())
        write_private(directory / "ca.pem", ca_cert.decode())  # last: its presence says the rest is there


@lru_cache(maxsize=8)
def _load(directory: Path, cluster: str, who: str) -> tuple[str, TlsMaterial]:
    _ensure(directory, cluster)
    tls = TlsMaterial((directory / "ca.pem").read_bytes(), (directory / f"{who}.pem").read_bytes(),
                      (directory / f"{who}.key").read_bytes())
    return (directory / "cluster-secret").read_text().strip(), tls


def uses_tls(inventory: Inventory, node: NodeSpec) -> bool:
    """TLS on a node's links: `security.tls` on / off, or (auto) when it is reached beyond loopback."""
    if inventory.tls in ("on", "off"):
        return inventory.tls == "on"
    return node.host is None or not is_loopback_address(f"{node.host}:0")


def coordinator_auth(inventory: Inventory) -> ClusterAuth:
    secret, tls = _load(secrets_dir(inventory), inventory.name, "coordinator")
    wants_tls = any(uses_tls(inventory, n) for n in inventory.nodes)
    return ClusterAuth(secret, tls if wants_tls else None, tls_on_loopback=inventory.tls == "on")


def worker_files(inventory: Inventory) -> dict[str, str]:
    """The files of `cluster worker --secret-file F --tls-dir D`, by name."""
    secret, tls = _load(secrets_dir(inventory), inventory.name, "worker")
    return {"cluster-secret": secret + "\n", "ca.pem": tls.ca_pem.decode(), "worker.pem": tls.cert_pem.decode(),
            "worker.key": tls.key_pem.decode()}


def worker_settings(inventory: Inventory, node: NodeSpec) -> dict:
    """What a worker is given: the secret, and its certificate when its links use TLS."""
    secret, tls = _load(secrets_dir(inventory), inventory.name, "worker")
    settings: dict = {"secret": secret}
    if uses_tls(inventory, node):
        settings |= {"tls_ca": tls.ca_pem.decode(), "tls_cert": tls.cert_pem.decode(), "tls_key": tls.key_pem.decode(),
                     "tls_on_loopback": inventory.tls == "on"}
    return settings
