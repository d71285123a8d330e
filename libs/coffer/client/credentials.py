"""Access-key credentials of the SDK and the CLI, and the signature each call carries.

``Credentials`` (AccessKeyId, SecretAccessKey, optional SessionToken) sign every call
(``coffer.crypto.signing``); the signing key is derived once per credentials. A client may instead be given a
:class:`CredentialProvider`, asked for the current credentials on every call (session credentials that are
refreshed before they expire, as the rotation service's are).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import grpc
from google.protobuf.message import Message

from coffer.crypto.access_keys import derive_signing_key
from coffer.crypto.signing import AUTHORIZATION_HEADER, SESSION_TOKEN_HEADER, sign_request


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    signing_key: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.signing_key:
            object.__setattr__(self, "signing_key", derive_signing_key(self.secret_access_key))


CredentialProvider = Callable[[], Credentials]


@runtime_checkable
class RefreshingProvider(Protocol):
    """A provider whose credentials expire (``coffer.client.assume_role.AssumeRoleProvider``): the
    asynchronous client awaits :meth:`current` before every call, and on ``ExpiredTokenException`` reports
    the credentials it used (:meth:`expired`) and retries the call once."""

    def __call__(self) -> Credentials: ...

    async def current(self) -> Credentials: ...

    async def expired(self, used: Credentials) -> None: ...


async def current_credentials(provider: CredentialProvider) -> Credentials:
    """What ``provider`` signs with now (refreshed first when it is a :class:`RefreshingProvider`)."""
    if isinstance(provider, RefreshingProvider):
        return await provider.current()
    return provider()


def as_provider(credentials: Credentials | CredentialProvider | None) -> CredentialProvider | None:
    if credentials is None or callable(credentials):
        return credentials
    fixed = credentials
    return lambda: fixed


def signed_metadata(
    credentials: Credentials, method: str, request: Message, *, clock: Callable[[], float] = time.time
) -> list[tuple[str, str]]:
    """The ``authorization`` (and session token) metadata of one call of ``method`` with ``request``."""
    return sign_request(
        access_key_id=credentials.access_key_id,
        signing_key=credentials.signing_key,
        method=method,
        body=request.SerializeToString(deterministic=True),
        timestamp=int(clock()),
        session_token=credentials.session_token,
    )


class SigningInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Signs every unary call of a ``grpc.aio`` channel (for code that uses the generated stubs directly):
    ``grpc.aio.secure_channel(..., interceptors=[SigningInterceptor(credentials)])``."""

    def __init__(self, credentials: Credentials | CredentialProvider) -> None:
        provider = as_provider(credentials)
        assert provider is not None
        self._provider = provider

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode("ascii")
        metadata = [
            (k, v)
            for k, v in (client_call_details.metadata or ())
            if k not in (AUTHORIZATION_HEADER, SESSION_TOKEN_HEADER)
        ]
        metadata.extend(signed_metadata(await current_credentials(self._provider), method, request))
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


class FileCredentials:
    """A :data:`CredentialProvider` reading a JSON file ``{access_key_id, secret_access_key, session_token}``
    and re-reading it when it changes (checked at most once a second): whoever renews the session (a
    deployment job) replaces the file, and the next call signs with the new credentials."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._stamp: tuple[int, int] | None = None
        self._next_check = float("-inf")
        self._current = self._load()

    def _load(self) -> Credentials:
        st = self._path.stat()
        doc = json.loads(self._path.read_text(encoding="utf-8"))
        creds = Credentials(doc["access_key_id"], doc["secret_access_key"], doc.get("session_token") or None)
        self._stamp = (st.st_mtime_ns, st.st_ino)
        return creds

    def __call__(self) -> Credentials:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + 1.0
            try:
                st = self._path.stat()
                if (st.st_mtime_ns, st.st_ino) != self._stamp:
                    self._current = self._load()
            except (OSError, ValueError, KeyError, TypeError):
                pass  # keep signing with the last good credentials; the file is being replaced
        return self._current
