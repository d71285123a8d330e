"""The web console's sessions and CSRF tokens (issue 15). Pure: time and randomness come in as arguments.

A session is what a sign-in leaves behind: the access key the browser signed in with (for an assumed role,
the temporary key and its session token), never the secret access key. The browser holds only a random
session id in a cookie; the store here keeps the rest, keyed by the SHA-256 of that id (a copy of the table
does not hold usable cookies).

A session ends at the first of: its absolute lifetime (``SESSION_SECONDS``, or the temporary credentials'
expiry), ``IDLE_SECONDS`` without a request, sign-out, or the access key being refused by the directory on a
later request (revoked, deactivated, expired: the console re-checks the key on every request).

CSRF: every session has its own random token, sent in a hidden field of every form and compared in constant
time on every POST. The sign-in form, which has no session yet, uses a double-submit token: a random value in
its own short-lived cookie and, in the form, an HMAC of that value under a key of this process.

Limits: sessions live in this process's memory. With several gateway replicas behind one address the
balancer must keep a browser on one replica (sticky sessions), and a restart signs everybody out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

#: Absolute lifetime of a session (AWS's console signs out after 12 hours; we keep it shorter).
SESSION_SECONDS = 8 * 3600
#: A session unused this long is over.
IDLE_SECONDS = 30 * 60
#: How many sessions one process keeps; the least recently used goes first beyond it.
MAX_SESSIONS = 10_000
#: Lifetime of the sign-in form's token.
SIGNIN_SECONDS = 15 * 60


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Session:
    """A signed-in browser."""

    access_key_id: str
    principal_arn: str
    csrf_token: str
    created: float
    expires: float
    last_seen: float
    #: The session token of temporary credentials (an assumed role), else None.
    session_token: str | None = field(default=None, repr=False)
    #: A role assumed at sign-in (shown in the header).
    role_arn: str | None = None
    #: One message to show on the next page (after a change redirected there).
    flash: str | None = None

    def check_csrf(self, token: str | None) -> bool:
        """Whether ``token`` (from the form) is this session's CSRF token (constant time)."""
        if not token:
            return False
        return hmac.compare_digest(token.encode("utf-8"), self.csrf_token.encode("utf-8"))

    def take_flash(self) -> str | None:
        message, self.flash = self.flash, None
        return message


class SessionStore:
    """Session id → :class:`Session`, in memory, bounded, with idle and absolute expiry."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        token: Callable[[int], str] = secrets.token_urlsafe,
        lifetime: float = SESSION_SECONDS,
        idle: float = IDLE_SECONDS,
        capacity: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._token = token
        self._lifetime = lifetime
        self._idle = idle
        self._capacity = capacity
        self._items: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def create(
        self,
        *,
        access_key_id: str,
        principal_arn: str,
        session_token: str | None = None,
        role_arn: str | None = None,
        not_after: float | None = None,
    ) -> tuple[str, Session]:
        """A new session; returns (the id for the cookie, the session). ``not_after``: an earlier end
        (temporary credentials' expiry)."""
        now = self._clock()
        expires = now + self._lifetime
        if not_after is not None:
            expires = min(expires, not_after)
        session_id = self._token(32)
        session = Session(
            access_key_id=access_key_id,
            principal_arn=principal_arn,
            csrf_token=self._token(32),
            created=now,
            expires=expires,
            last_seen=now,
            session_token=session_token,
            role_arn=role_arn,
        )
        while len(self._items) >= self._capacity:
            self._items.popitem(last=False)
        self._items[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (its idle clock restarted), or None (unknown or over: then
        it is forgotten)."""
        if not session_id:
            return None
        key = _digest(session_id)
        session = self._items.get(key)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires or now - session.last_seen >= self._idle:
            del self._items[key]
            return None
        session.last_seen = now
        self._items.move_to_end(key)
        return session

    def remaining(self, session: Session) -> float:
        """Seconds until ``session`` ends at the latest (for the cookie's Max-Age)."""
        return max(0.0, session.expires - self._clock())

    def delete(self, session_id: str | None) -> bool:
        """End a session (sign-out, or its key was refused). True if it existed."""
        if not session_id:
            return False
        return self._items.pop(_digest(session_id), None) is not None

    def delete_key(self, access_key_id: str) -> int:
        """End every session of ``access_key_id``; returns how many."""
        gone = [k for k, s in self._items.items() if s.access_key_id == access_key_id]
        for key in gone:
            del self._items[key]
        return len(gone)


class SigninTokens:
    """The sign-in form's double-submit CSRF token: a random nonce (its own cookie) and, in the form,
    ``<issued>.<HMAC(key, nonce|issued)>``; valid for ``SIGNIN_SECONDS``."""

    def __init__(
        self,
        key: bytes,
        *,
        clock: Callable[[], float],
        token: Callable[[int], str] = secrets.token_urlsafe,
        lifetime: float = SIGNIN_SECONDS,
    ) -> None:
        self._key = key
        self._clock = clock
        self._token = token
        self._lifetime = lifetime

    def _mac(self, nonce: str, issued: int) -> str:
        return hmac.new(self._key, f"{nonce}|{issued}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> tuple[str, str]:
        """(the cookie's nonce, the form's token)."""
        nonce = self._token(24)
        issued = int(self._clock())
        return nonce, f"{issued}.{self._mac(nonce, issued)}"

    def check(self, nonce: str | None, form_token: str | None) -> bool:
        if not nonce or not form_token:
            return False
        issued_text, _, mac = form_token.partition(".")
        if not issued_text.isdigit():
            return False
        issued = int(issued_text)
        now = self._clock()
        if not issued <= now < issued + self._lifetime:
            return False
        return hmac.compare_digest(mac.encode("utf-8"), self._mac(nonce, issued).encode("utf-8"))


def same_origin(origin: str | None, host: str) -> bool:
    """A POST's ``Origin`` (when the browser sent one) names this console (``https://<host>``)."""
    if origin is None:
        return True  # not every browser sends it on every POST; the CSRF token decides then
    return hmac.compare_digest(origin.encode("utf-8"), f"https://{host}".encode())


#: Failed sign-ins allowed per address and per access key within SIGNIN_WINDOW_SECONDS.
SIGNIN_MAX_FAILURES = 10
SIGNIN_WINDOW_SECONDS = 300.0


class SigninLimiter:
    """Refuses sign-ins from an address, or for an access key id, after ``max_failures`` failures within
    ``window`` seconds (a sliding window; a success clears that key's count). In memory, per process, bounded:
    when ``capacity`` keys are tracked the oldest is forgotten."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_failures: int = SIGNIN_MAX_FAILURES,
        window: float = SIGNIN_WINDOW_SECONDS,
        capacity: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._max = max_failures
        self._window = window
        self._capacity = capacity
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, key: str) -> list[float]:
        times = self._failures.get(key)
        if times is None:
            return []
        cutoff = self._clock() - self._window
        recent = [t for t in times if t > cutoff]
        if recent:
            self._failures[key] = recent
        else:
            del self._failures[key]
        return recent

    def allowed(self, *keys: str) -> bool:
        return all(len(self._recent(key)) < self._max for key in keys if key)

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            if not key:
                continue
            recent = self._recent(key)
            recent.append(now)
            self._failures[key] = recent[-self._max :]
            self._failures.move_to_end(key)
            while len(self._failures) > self._capacity:
                self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
