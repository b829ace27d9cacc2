"""Who may call a worker: every call carries the cluster's secret (gRPC metadata), checked by the
worker in constant time and refused with UNAUTHENTICATED otherwise; links that leave the machine
use mutual TLS with the cluster's own CA, so only holders of a certificate it signed connect
(the CA is the pin: no public CA is trusted).

`cluster up` creates the secret and the CA (cluster.credentials) and hands each worker its copy.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass

import grpc

from proto import grpc_options

log = logging.getLogger(__name__)

SECRET_METADATA = "x-boltpipe-secret"
# Every certificate the cluster CA signs for a worker names this host: peers are told to expect it,
# so certificates need not list the addresses (which DHCP and Thunderbolt bridges change).
WORKER_TLS_NAME = "worker.boltpipe.invalid"


@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes        # the cluster CA's certificate: the only one trusted
    cert_pem: bytes      # this process's certificate, signed by the cluster CA
    key_pem: bytes


@dataclass(frozen=True)
class ClusterAuth:
    secret: str = ""                 # empty: calls carry none (a worker without one accepts all)
    tls: TlsMaterial | None = None   # None: plain TCP
    tls_on_loopback: bool = False    # `security.tls: on`: loopback links use TLS too

    def channel(self, address: str):
        """A channel to a worker at `address`: TLS when this side has TLS material and the
        address is not loopback (workers on this machine are reached in plain TCP)."""
        if self.uses_tls(address):
            return self.tls_channel(address)
        return self._with_secret(grpc.aio.insecure_channel(address, options=grpc_options()))

    def uses_tls(self, address: str) -> bool:
        return self.tls is not None and (self.tls_on_loopback or not is_loopback_address(address))

    def tls_channel(self, address: str):
        assert self.tls is not None
        credentials = grpc.ssl_channel_credentials(root_certificates=self.tls.ca_pem, private_key=self.tls.key_pem,
                                                   certificate_chain=self.tls.cert_pem)
        options = grpc_options() + [("grpc.ssl_target_name_override", WORKER_TLS_NAME)]
        return self._with_secret(grpc.aio.secure_channel(address, credentials, options=options))

    def _with_secret(self, channel: grpc.aio.Channel):
        return SecretChannel(channel, self.secret) if self.secret else channel


def is_loopback_address(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_credentials(tls: TlsMaterial) -> grpc.ServerCredentials:
    """Mutual TLS: a client without a certificate from the cluster CA is refused in the handshake."""
    return grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem,
                                       require_client_auth=True)


class SecretChannel:
    """A channel whose every call carries the cluster secret. (grpc.aio's client interceptors
    were tried: response-streaming calls went out without the added metadata.)"""

    def __init__(self, channel: grpc.aio.Channel, secret: str):
        self._channel = channel
        self._metadata = ((SECRET_METADATA, secret),)

    def _wrap(self, multicallable):
        metadata = self._metadata

        def call(*args, **kwargs):
            kwargs["metadata"] = tuple(kwargs.get("metadata") or ()) + metadata
            return multicallable(*args, **kwargs)

        return call

    def unary_unary(self, *args, **kwargs):
        return self._wrap(self._channel.unary_unary(*args, **kwargs))

    def unary_stream(self, *args, **kwargs):
        return self._wrap(self._channel.unary_stream(*args, **kwargs))

    def stream_unary(self, *args, **kwargs):
        return self._wrap(self._channel.stream_unary(*args, **kwargs))

    def stream_stream(self, *args, **kwargs):
        return self._wrap(self._channel.stream_stream(*args, **kwargs))

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    async def __aenter__(self) -> "SecretChannel":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __getattr__(self, name: str):
        return getattr(self._channel, name)


class RequireSecret(grpc.aio.ServerInterceptor):
    """Refuses, before any of the worker's code runs, every call without the cluster secret."""

    def __init__(self, secret: str):
        self._secret = secret.encode()

    def allowed(self, metadata) -> bool:
        presented = dict(metadata or ()).get(SECRET_METADATA, "")
        if isinstance(presented, str):
            presented = presented.encode()
        return hmac.compare_digest(presented, self._secret)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or self.allowed(details.invocation_metadata):
            return handler
        log.warning("refused %s: %s", details.method,
                    "wrong cluster secret" if SECRET_METADATA in dict(details.invocation_metadata or ())
                    else "no cluster secret")
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def refuse(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "this worker belongs to another cluster: the call did not carry its cluster secret")

    kinds = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
