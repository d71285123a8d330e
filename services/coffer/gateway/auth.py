"""Bearer-credential authentication for the public gateway.

``BearerAuthenticator`` is the ``authenticator`` given to ``coffer.rpc.server.start_server``: it reads the
``authorization: Bearer <token>`` metadata of each call and returns the principal, or raises
``errors.Unauthenticated``. Credentials come from the credentials file (``coffer.credentials``), re-read when
its modification time changes (a cheap ``stat``, at most once a second).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import structlog

from coffer.core import errors
from coffer.credentials import Credential, read_credentials, verify_token

log = structlog.get_logger("coffer.gateway.auth")

AUTHORIZATION_HEADER = "authorization"
MISSING_CODE = "MissingAuthenticationTokenException"
MISSING_MESSAGE = (
    "Missing credential: send the gRPC metadata 'authorization: Bearer <token>' "
    "(create a token with `coffer admin create-credential --principal user/NAME`)."
)


class CredentialStore:
    """The credentials of the file at ``path``, reloaded when the file changes. A file that cannot be read
    or parsed keeps the last good set (and logs why); a file that was deleted means no credential is valid."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        check_interval: float = 1.0,
    ) -> None:
        self._path = path
        self._clock = clock
        self._check_interval = check_interval
        self._credentials: dict[str, Credential] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = float("-inf")
        self.refresh(force=True)

    @property
    def path(self) -> Path:
        return self._path

    def __len__(self) -> int:
        return len(self._credentials)

    def refresh(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now < self._next_check:
            return
        self._next_check = now + self._check_interval
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            if self._stamp is not None or force:
                log.warning("credentials.missing", path=str(self._path))
            self._credentials, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp and not force:
            return
        try:
            self._credentials = read_credentials(self._path)
        except (OSError, ValueError) as exc:
            log.error("credentials.unreadable", path=str(self._path), error=str(exc))
            return
        self._stamp = stamp
        log.info("credentials.loaded", path=str(self._path), count=len(self._credentials))

    def principal_for(self, token: str) -> str:
        """The principal ``token`` authenticates, or ``errors.Unauthenticated``."""
        self.refresh()
        return verify_token(self._credentials, token)


def bearer_token(metadata: dict[str, str]) -> str:
    """The token of an ``authorization: Bearer <token>`` header; Unauthenticated when absent or malformed."""
    header = metadata.get(AUTHORIZATION_HEADER)
    if header is None or not header.strip():
        raise errors.Unauthenticated(MISSING_MESSAGE, code=MISSING_CODE)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated()
    return token.strip()


class BearerAuthenticator:
    """``Authenticator`` for ``start_server``: call context → principal."""

    def __init__(self, store: CredentialStore) -> None:
        self._store = store

    async def __call__(self, context: grpc.aio.ServicerContext, method: str) -> str:
        metadata: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                metadata[key.lower()] = value
        return self._store.principal_for(bearer_token(metadata))
