"""Session credentials of a role, assumed with a long-term access key and refreshed before they expire.

:class:`AssumeRoleProvider` is a credentials provider (``AsyncCofferClient(..., provider)``) that calls
``sts:AssumeRole`` (any awaitable returning :class:`AssumedCredentials`; :func:`sts_assume_role` does it
through the gateway) and hands out the session it got. The asynchronous client asks it before every call
(:meth:`AssumeRoleProvider.current`): a session with less than ``refresh_fraction`` (20 %) of its lifetime
left is replaced first, by one AssumeRole however many calls wait for it; a call refused with
``ExpiredTokenException`` reports the session (:meth:`AssumeRoleProvider.expired`) and is retried once with a
new one. If STS cannot be reached while the current session is still valid, that session keeps signing
(and the refresh is tried again after ``retry_seconds``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coffer import logs
from coffer.client.credentials import Credentials
from coffer.core import errors

if TYPE_CHECKING:
    from coffer.client.aio import AsyncStsClient

log = logs.get_logger("coffer.client.assume_role")

#: AWS STS's bounds of DurationSeconds.
MIN_SESSION_SECONDS = 900
MAX_SESSION_SECONDS = 43200


@dataclass(frozen=True, slots=True)
class AssumedCredentials:
    credentials: Credentials
    #: When the session expires (seconds since the epoch, as ``clock`` counts).
    expiration: float


AssumeFn = Callable[[], Awaitable[AssumedCredentials]]


class AssumeRoleProvider:
    """Role session credentials, assumed on first use and refreshed before they expire (one refresh at a
    time). Callable (the SDK's ``CredentialProvider``): returns the current session without refreshing."""

    def __init__(
        self,
        assume: AssumeFn,
        *,
        clock: Callable[[], float] = time.time,
        refresh_fraction: float = 0.2,
        retry_seconds: float = 5.0,
    ) -> None:
        if not 0.0 < refresh_fraction < 1.0:
            raise ValueError("refresh_fraction must be between 0 and 1")
        self._assume = assume
        self._clock = clock
        self._refresh_fraction = refresh_fraction
        self._retry_seconds = retry_seconds
        self._lock = asyncio.Lock()
        self._session: AssumedCredentials | None = None
        self._refresh_at = float("-inf")
        self._retry_at = float("-inf")
        #: How many sessions were assumed (for tests and logs).
        self.assumed = 0

    def __call__(self) -> Credentials:
        if self._session is None:
            raise errors.Unavailable("No role session yet: await the provider's current() first.")
        return self._session.credentials

    def _fresh(self, now: float) -> bool:
        return self._session is not None and now < self._refresh_at

    def _usable(self, now: float) -> bool:
        return self._session is not None and now < self._session.expiration

    async def current(self) -> Credentials:
        """The session to sign with, assuming the role first when there is none or it is near its end."""
        session = self._session
        if session is not None and self._fresh(self._clock()):
            return session.credentials
        async with self._lock:
            now = self._clock()
            if self._fresh(now) or (self._usable(now) and now < self._retry_at):
                assert self._session is not None
                return self._session.credentials
            return await self._refresh(now)

    async def expired(self, used: Credentials) -> None:
        """``used`` was refused as expired: assume the role again unless another call already did."""
        async with self._lock:
            if self._session is not None and self._session.credentials.access_key_id != used.access_key_id:
                return
            self._session = None
            await self._refresh(self._clock())

    async def _refresh(self, now: float) -> Credentials:
        try:
            got = await self._assume()
        except errors.CofferError as exc:
            if self._usable(now):
                self._retry_at = now + self._retry_seconds
                log.warning("assume_role.refresh_failed", error=exc.code, detail=exc.message)
                assert self._session is not None
                return self._session.credentials
            raise
        lifetime = max(got.expiration - now, 0.0)
        self._session = got
        self._refresh_at = got.expiration - lifetime * self._refresh_fraction
        self._retry_at = float("-inf")
        self.assumed += 1
        log.info(
            "assume_role.assumed",
            access_key_id=got.credentials.access_key_id,
            expires=dt.datetime.fromtimestamp(got.expiration, dt.UTC).isoformat(),
        )
        return got.credentials


def check_session_seconds(seconds: int) -> int:
    if not MIN_SESSION_SECONDS <= seconds <= MAX_SESSION_SECONDS:
        raise errors.InvalidParameter(
            f"The session duration must be between {MIN_SESSION_SECONDS} and {MAX_SESSION_SECONDS} seconds,"
            f" got {seconds}."
        )
    return seconds


def sts_assume_role(
    sts: AsyncStsClient,
    *,
    role_arn: str,
    session_name: str,
    duration_seconds: int = 3600,
) -> AssumeFn:
    """An :data:`AssumeFn` calling ``sts.assume_role`` (an ``AsyncStsClient`` signing with the long-term
    access key that may assume ``role_arn``)."""
    check_session_seconds(duration_seconds)

    async def assume() -> AssumedCredentials:
        reply = await sts.assume_role(
            role_arn=role_arn, role_session_name=session_name, duration_seconds=duration_seconds
        )
        c = reply.credentials
        return AssumedCredentials(
            Credentials(c.access_key_id, c.secret_access_key, c.session_token),
            c.expiration.seconds + c.expiration.nanos / 1e9,
        )

    return assume
