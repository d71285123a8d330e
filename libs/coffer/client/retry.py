"""Client retries, like the AWS SDKs' ``standard`` retry mode: the one policy of the sync and async clients.

A call that failed with a retryable error is made again, up to ``max_attempts`` attempts in all (default 3;
1 = no retry), after a delay of full jitter (AWS's "exponential backoff and jitter"): ``random() *
min(max_backoff, base * 2 ** (n - 1))`` after the n-th failed attempt (``base`` 100 ms, 500 ms after a
throttling error, ``max_backoff`` 20 s: the AWS SDK for Java's figures; botocore uses a 1 s base). Retryable:

- ``Unavailable`` (UNAVAILABLE: a dependency or the gateway itself, ``EndpointUnreachable``, a sealed kms);
- ``Throttling`` (RESOURCE_EXHAUSTED, ``ThrottlingException``);
- ``Aborted`` (ABORTED, ``TransactionConflict``: nothing was applied);
- ``DeadlineExceeded`` (the call's own deadline) for idempotent reads only (Get*, Describe*, List*,
  BatchGet*, Lookup*): a write that timed out may have been applied.

Anything else (NotFound, AccessDenied, Validation, InvalidRequest, Internal, ...) is raised at once. Writes
are safe to retry: the SDK fills ``client_request_token`` once per logical call, before the first attempt,
and the store answers a repeated token with the same value with the version it already made.

Like AWS, retries draw on a retry quota per client (a token bucket of 500: a retry takes 5, a retry after a
timeout 10; a call that succeeds gives back what its last retry took, or 1 when it was not retried). An empty
bucket means no more retries (the error is raised), so a client facing an outage stops multiplying its load.

Pure: the clients do the I/O (and sleep with ``sleep`` / ``async_sleep``); ``random`` is injectable.
"""

from __future__ import annotations

import asyncio
import random as _random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from coffer.core import errors

STANDARD = "standard"
RETRY_MODES = frozenset({STANDARD})
DEFAULT_MAX_ATTEMPTS = 3
BASE_DELAY_SECONDS = 0.1
THROTTLING_BASE_DELAY_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 20.0
#: AWS's retry quota: bucket size, cost of a retry, cost of a retry after a timeout, refund of a first-try
#: success.
QUOTA_CAPACITY = 500
RETRY_COST = 5
TIMEOUT_RETRY_COST = 10
NO_RETRY_INCREMENT = 1
IDEMPOTENT_PREFIXES = ("Get", "Describe", "List", "BatchGet", "Lookup")


class DeadlineExceeded(errors.Unavailable):
    """The call's own deadline passed before an answer came (gRPC DEADLINE_EXCEEDED raised by the client).
    Retried for idempotent reads only."""


def is_idempotent_read(operation: str) -> bool:
    return operation.startswith(IDEMPOTENT_PREFIXES)


def is_retryable(error: errors.CofferError, operation: str) -> bool:
    """Whether a call of ``operation`` that failed with ``error`` may be made again."""
    if isinstance(error, DeadlineExceeded):
        return is_idempotent_read(operation)
    return isinstance(error, (errors.Unavailable, errors.Throttling, errors.Aborted))


def validate_max_attempts(value: object) -> int:
    """``value`` as a number of attempts (an int >= 1, or a string of one); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"max_attempts must be an integer >= 1, not {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"max_attempts must be an integer >= 1, not {value!r}") from None
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"max_attempts must be an integer >= 1, not {value!r}")
    return value


def validate_retry_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in RETRY_MODES:
        raise ValueError(
            f"retry_mode must be {STANDARD!r}, not {value!r} (AWS's legacy and adaptive modes are not "
            "implemented; max_attempts = 1 turns retries off)"
        )
    return mode


class RetryQuota:
    """AWS's retry token bucket (thread-safe; shared by all the calls of one client)."""

    def __init__(self, capacity: int = QUOTA_CAPACITY) -> None:
        self.capacity = capacity
        self._available = capacity
        self._lock = threading.Lock()

    @property
    def available(self) -> int:
        return self._available

    def acquire(self, amount: int) -> bool:
        with self._lock:
            if amount > self._available:
                return False
            self._available -= amount
            return True

    def release(self, amount: int) -> None:
        with self._lock:
            self._available = min(self.capacity, self._available + amount)


@dataclass
class RetryPolicy:
    """How one client retries (``max_attempts`` 1 turns retries off). ``quota=None`` disables the retry
    quota. ``sleep`` / ``async_sleep`` are what the sync / async client wait with between attempts."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    mode: str = STANDARD
    base_delay: float = BASE_DELAY_SECONDS
    throttling_base_delay: float = THROTTLING_BASE_DELAY_SECONDS
    max_backoff: float = MAX_BACKOFF_SECONDS
    random: Callable[[], float] = _random.random
    quota: RetryQuota | None = field(default_factory=RetryQuota)
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        self.max_attempts = validate_max_attempts(self.max_attempts)
        self.mode = validate_retry_mode(self.mode)

    def delay(self, failed_attempt: int, error: errors.CofferError) -> float:
        """Full jitter after the ``failed_attempt``-th attempt (1-based) failed with ``error``."""
        base = self.throttling_base_delay if isinstance(error, errors.Throttling) else self.base_delay
        cap = min(self.max_backoff, base * 2.0 ** min(failed_attempt - 1, 64))
        return self.random() * cap

    def start(self, operation: str) -> RetryRun:
        """The retry bookkeeping of one logical call of ``operation``."""
        return RetryRun(self, operation)


class RetryRun:
    """One logical call: ``next_delay`` after each failed attempt, ``succeeded`` once it worked."""

    def __init__(self, policy: RetryPolicy, operation: str) -> None:
        self.policy = policy
        self.operation = operation
        #: Attempts made so far (counted by ``next_delay``, and by ``succeeded`` for the last one).
        self.attempts = 0
        self._last_cost: int | None = None

    def next_delay(self, error: errors.CofferError) -> float | None:
        """The attempt just made failed with ``error``: the seconds to wait before the next one, or None to
        give up (not retryable, attempts used up, or the retry quota empty) and raise ``error``."""
        self.attempts += 1
        if not is_retryable(error, self.operation) or self.attempts >= self.policy.max_attempts:
            return None
        cost = TIMEOUT_RETRY_COST if isinstance(error, DeadlineExceeded) else RETRY_COST
        quota = self.policy.quota
        if quota is not None and not quota.acquire(cost):
            return None
        self._last_cost = cost
        return self.policy.delay(self.attempts, error)

    def succeeded(self) -> None:
        self.attempts += 1
        if self.policy.quota is not None:
            self.policy.quota.release(NO_RETRY_INCREMENT if self._last_cost is None else self._last_cost)
