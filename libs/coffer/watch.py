"""Serving a watch stream (a server-streaming RPC fed by a :class:`coffer.pgnotify.NotifyHub`).

The caller check is repeated here, inside the handler, because a streaming handler must refuse a peer that
its service's peer policy does not allow even where the server's interceptor only wraps unary methods."""

from __future__ import annotations

import grpc

from coffer.core import errors
from coffer.rpc.status import to_status


def caller_identity(context: grpc.aio.ServicerContext) -> str | None:
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode() if names else None


async def require_peer(context: grpc.aio.ServicerContext, allowed: frozenset[str], *, what: str) -> None:
    """Abort the call with PERMISSION_DENIED unless the caller's mTLS identity is one of ``allowed``."""
    identity = caller_identity(context)
    if identity not in allowed:
        code, message, trailers = to_status(
            errors.AccessDenied(f"Service identity {identity or '(none)'} may not call {what}.")
        )
        await context.abort(code, message, trailing_metadata=trailers)
