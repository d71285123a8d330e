"""Request-signature authentication for the public gateway.

``SignatureAuthenticator`` is the ``authenticator`` given to ``coffer.rpc.server.start_server``: for each call
it reads the ``authorization: COFFER1-HMAC-SHA256 …`` metadata (``coffer.crypto.signing``), finds the access
key in the principal directory (``coffer.principal_directory.DirectoryCache``: a dict lookup once cached,
dropped as the store's change stream tells), and verifies the signature over the method, the timestamp, the
request message and the session token. It returns the caller's :class:`~coffer.core.principal.Principal` and
binds the end caller's address and user agent for the store and the kms (audit, ``aws:SourceIp``). Every
public call goes through it before its handler runs; a call whose request it cannot see (client streaming)
is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from coffer.core import errors
from coffer.core.principal import Principal
from coffer.crypto import signing
from coffer.principal_directory import DirectoryCache
from coffer.rpc import context as ctx

USER_AGENT_HEADER = "user-agent"


def source_ip(peer: str | None) -> str | None:
    """The address of a grpc peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``); None when there is none."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return host.strip("[]") or None
    return None


class SignatureAuthenticator:
    """``Authenticator`` for ``start_server``: call context, method, request → the caller."""

    def __init__(self, directory: DirectoryCache, *, clock: Callable[[], float] = time.time) -> None:
        self._directory = directory
        self._clock = clock

    async def __call__(self, context: grpc.aio.ServicerContext, method: str, request: Any) -> Principal:
        auth: str | None = None
        session_token: str | None = None
        user_agent: str | None = None
        for key, value in context.invocation_metadata() or ():
            if not isinstance(value, str):
                continue
            lower = key.lower()
            if lower == signing.AUTHORIZATION_HEADER:
                auth = value
            elif lower == signing.SESSION_TOKEN_HEADER:
                session_token = value
            elif lower == USER_AGENT_HEADER:
                user_agent = value
        header = signing.parse_authorization(auth)
        if not isinstance(request, Message):
            raise errors.Unauthenticated(
                "This call cannot be signed (no request message).", code=signing.INCOMPLETE_CODE
            )
        resolved = await self._directory.resolve(header.access_key_id)
        signing.verify_request(
            resolved.record.key_material() if resolved is not None else None,
            header,
            method=method,
            body=request.SerializeToString(deterministic=True),
            session_token=session_token,
            now=self._clock(),
        )
        assert resolved is not None  # verify_request refuses an unknown key
        ip = source_ip(context.peer())
        if ip:
            ctx.source_ip_var.set(ip)
        if user_agent:
            ctx.user_agent_var.set(user_agent[:256])
        return resolved.principal
