"""Client channels between services: TLS (mTLS with our own certificate, the server's service name verified),
the request id and the end caller's principal propagated as metadata (with the assertion that proves it), and
errors turned back into CofferErrors."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import grpc

from coffer.rpc import context as ctx
from coffer.rpc.assertions import PrincipalSigner
from coffer.rpc.status import from_rpc_error
from coffer.rpc.tls import TlsFiles, channel_credentials, name_options, service_host


class _Propagation:
    """Adds the request id, and the end caller's principal with its assertion: signed here when the channel
    has a signer (the gateway's), else the verified one this call came with. Without an assertion no
    principal is claimed: the callee then sees this service's own identity."""

    def __init__(self, signer: PrincipalSigner | None) -> None:
        self._signer = signer

    def _details(self, client_call_details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(client_call_details.metadata or ())
        rid = ctx.current_request_id()
        if rid is not None:
            metadata.append((ctx.REQUEST_ID_HEADER, rid))
        principal = ctx.current_principal()
        if principal is not None:
            if self._signer is not None:
                caller = ctx.caller_var.get()
                assertion: str | None = self._signer.assertion_for(
                    principal,
                    access_key_id=caller.access_key_id if caller is not None else None,
                    account=caller.account if caller is not None else None,
                )
            else:
                assertion = ctx.current_assertion()
            if assertion is not None:
                metadata.append((ctx.PRINCIPAL_HEADER, principal))
                metadata.append((ctx.ASSERTION_HEADER, assertion))
                source_ip = ctx.source_ip_var.get()
                if source_ip:
                    metadata.append((ctx.SOURCE_IP_HEADER, source_ip))
                user_agent = ctx.user_agent_var.get()
                if user_agent:
                    metadata.append((ctx.USER_AGENT_HEADER, user_agent))
        return grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )


class _ContextPropagator(_Propagation, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The propagation on unary calls, whose errors become CofferErrors here."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        details = self._details(client_call_details)
        call = await continuation(details, request)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return call


class _StreamContextPropagator(_Propagation, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The same metadata on server-streaming calls (the gateway's forwarded WatchSecrets): without it the
    callee would see the gateway's own identity instead of the end caller's. Errors surface while iterating
    the call (``grpc.aio.AioRpcError``); the caller maps them with ``from_rpc_error``."""

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


#: How often Coffer's channels ping a peer while a call is open (to notice a dead peer under a long-lived
#: stream). Every Coffer server accepts pings this often (``coffer.rpc.server.SERVER_DEFAULTS``).
KEEPALIVE_MS = 30_000


#: For channels whose peer may start after them (the kms's channel to the store's principal directory): retry
#: connecting at least every second instead of grpc's default back-off of up to two minutes.
FAST_RECONNECT: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


#: Calls spread over every address of the target, a dead one left out until it answers again.
_ROUND_ROBIN = ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))


def spread_target(target: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """The gRPC target and options for ``target``: one ``host:port`` as it is; several replicas as
    ``ip:port,ip:port`` (``ipv4:`` addresses) or a ``dns:///name:port`` whose name has several addresses (a
    Kubernetes headless Service) get round-robin balancing over them (issue 11)."""
    if target.startswith("dns:"):
        return target, (_ROUND_ROBIN,)
    if "," not in target:
        return target, ()
    parts = [p.strip() for p in target.split(",") if p.strip()]
    for part in parts:
        host, _, port = part.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"{target!r}: several replicas are given as IPv4 ip:port pairs, or as one dns:///name:port"
            ) from None
        if not port.isdigit():
            raise ValueError(f"{target!r}: {part!r} has no port")
    return "ipv4:" + ",".join(parts), (_ROUND_ROBIN,)


def secure_channel(
    target: str,
    tls: TlsFiles,
    *,
    server_name: str,
    signer: PrincipalSigner | None = None,
    options: tuple[tuple[str, Any], ...] = (),
) -> grpc.aio.Channel:
    """A channel to another Coffer service. ``server_name`` is the identity of the service meant (``store``):
    its certificate must carry that service's name (``store.coffer.internal``, checked whatever address
    ``target`` is). ``signer``: sign the end caller's principal (the gateway). Calls on it raise CofferError
    subclasses, never raw grpc errors."""
    resolved, balancing = spread_target(target)
    return grpc.aio.secure_channel(
        resolved,
        channel_credentials(tls),
        options=[
            *name_options(service_host(server_name)),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            *balancing,
            *options,
        ],
        interceptors=[_ContextPropagator(signer), _StreamContextPropagator(signer)],
    )
