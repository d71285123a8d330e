"""Client channels between services: TLS (mTLS with our own certificate), the request id and end-caller
principal propagated as metadata, and errors turned back into CofferErrors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from coffer.rpc import context as ctx
from coffer.rpc.status import from_rpc_error
from coffer.rpc.tls import TlsFiles, channel_credentials


class _ContextPropagator(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = list(client_call_details.metadata or ())
        rid = ctx.current_request_id()
        if rid is not None:
            metadata.append((ctx.REQUEST_ID_HEADER, rid))
        principal = ctx.current_principal()
        if principal is not None:
            metadata.append((ctx.PRINCIPAL_HEADER, principal))
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        call = await continuation(details, request)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return call


def secure_channel(target: str, tls: TlsFiles, *, server_name: str) -> grpc.aio.Channel:
    """A channel to another Coffer service. ``server_name`` is the identity in the server's certificate
    (services are addressed by IP:port, so the expected name is set explicitly). Calls on it raise
    CofferError subclasses, never raw grpc errors."""
    return grpc.aio.secure_channel(
        target,
        channel_credentials(tls),
        options=[
            ("grpc.ssl_target_name_override", server_name),
            ("grpc.default_authority", server_name),
            ("grpc.keepalive_time_ms", 30_000),
        ],
        interceptors=[_ContextPropagator()],
    )
