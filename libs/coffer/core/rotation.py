"""Rotation attempts as a pure state machine, and the rotation constants every service shares.

An attempt is created Pending for one ClientRequestToken. A worker takes its lease (the first lease of a try
counts the try and makes it InProgress), records each of the four steps under that lease (which extends it),
and ends the try with succeed (Succeeded) or fail_try: a retry after an exponential back-off while tries are
left, else Failed. CancelRotateSecret cancels an open attempt (Cancelled). A lease that expires lets another
worker take the attempt over (a new try). Succeeded, Failed and Cancelled are final.

The functions here decide; the store persists what they return. No I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from coffer.core import errors

# --- built-in rotators (the names a RotateSecret RotationLambdaARN may give instead of a function ARN) -----

RANDOM_VALUE = "random-value"
POSTGRESQL_SINGLE_USER = "postgresql-single-user"
POSTGRESQL_ALTERNATING_USERS = "postgresql-alternating-users"
MYSQL_SINGLE_USER = "mysql-single-user"
MYSQL_ALTERNATING_USERS = "mysql-alternating-users"
#: Built-in rotators that change a database user's password.
DATABASE_ROTATORS = (
    POSTGRESQL_SINGLE_USER,
    POSTGRESQL_ALTERNATING_USERS,
    MYSQL_SINGLE_USER,
    MYSQL_ALTERNATING_USERS,
)
BUILTIN_ROTATORS = (RANDOM_VALUE, *DATABASE_ROTATORS)


class Step(StrEnum):
    """The four steps of a rotation, in order (the names AWS rotation functions receive)."""

    CREATE_SECRET = "createSecret"
    SET_SECRET = "setSecret"
    TEST_SECRET = "testSecret"
    FINISH_SECRET = "finishSecret"


class StepStatus(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AttemptStatus(StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class Trigger(StrEnum):
    """What started an attempt: a RotateSecret call or the schedule."""

    API = "api"
    SCHEDULE = "schedule"


STEPS: tuple[str, ...] = tuple(s.value for s in Step)
STEP_STATUSES: tuple[str, ...] = tuple(s.value for s in StepStatus)
#: Statuses of an attempt that is not finished (at most one per secret).
OPEN_STATUSES = frozenset({AttemptStatus.PENDING, AttemptStatus.IN_PROGRESS})

# --- constants ----------------------------------------------------------------------------------------------

MAX_TRIES = 5
BACKOFF_BASE_SECONDS = 2.0
DEFAULT_LEASE_SECONDS = 60
MAX_LEASE_SECONDS = 3600
#: Longest error text kept for an attempt or a step.
MAX_ERROR = 4096
CANCELLED_ERROR = "Cancelled by CancelRotateSecret."
FAILED_WITHOUT_MESSAGE = "The rotation step failed without a message."


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    max_tries: int = MAX_TRIES
    backoff_base_seconds: float = BACKOFF_BASE_SECONDS
    default_lease_seconds: int = DEFAULT_LEASE_SECONDS


@dataclass(frozen=True, slots=True)
class Attempt:
    """The state of one rotation attempt (what the store keeps per attempt, identity aside)."""

    status: AttemptStatus
    tries: int = 0
    started: datetime | None = None
    finished: datetime | None = None
    next_try: datetime | None = None
    lease_owner: str | None = None
    lease_expires: datetime | None = None
    lease_seconds: int | None = None
    error: str | None = None

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    def lease_live(self, now: datetime) -> bool:
        """Someone holds a lease that has not expired."""
        return self.lease_owner is not None and self.lease_expires is not None and self.lease_expires > now

    def claimable(self, now: datetime) -> bool:
        """Open, nobody holds a live lease, and the next try is due (a job should be queued for it)."""
        return self.open and not self.lease_live(now) and (self.next_try is None or self.next_try <= now)


@dataclass(frozen=True, slots=True)
class LeaseDecision:
    """acquire's answer: the new state when the lease is granted, else why not."""

    state: Attempt | None
    reason: str = ""

    @property
    def acquired(self) -> bool:
        return self.state is not None


@dataclass(frozen=True, slots=True)
class FailDecision:
    state: Attempt
    #: True: the attempt is Failed; False: it is retried after ``delay_seconds``.
    final: bool
    delay_seconds: float


def start(now: datetime) -> Attempt:
    """A new attempt, its first try due now."""
    return Attempt(status=AttemptStatus.PENDING, next_try=now)


def lease_seconds_for(requested: int, policy: RotationPolicy) -> int:
    """The lease a worker gets: what it asked for (the policy's default when 0), at most an hour."""
    return min(requested if requested > 0 else policy.default_lease_seconds, MAX_LEASE_SECONDS)


def acquire(attempt: Attempt, *, worker_id: str, now: datetime, lease_seconds: int) -> LeaseDecision:
    """A worker asks for the lease. Its own lease is renewed (same try); a free or expired lease starts a
    new try, when that try is due."""
    if not attempt.open:
        return LeaseDecision(None, f"the attempt is {attempt.status}")
    mine = attempt.lease_owner == worker_id
    if not mine and attempt.lease_live(now):
        until = attempt.lease_expires.isoformat() if attempt.lease_expires else "?"
        return LeaseDecision(None, f"worker {attempt.lease_owner} holds the lease until {until}")
    if not mine and attempt.next_try is not None and attempt.next_try > now:
        return LeaseDecision(None, f"the next try is due at {attempt.next_try.isoformat()}")
    state = dataclasses.replace(
        attempt,
        lease_owner=worker_id,
        lease_expires=now + timedelta(seconds=lease_seconds),
        lease_seconds=lease_seconds,
    )
    if not mine:
        state = dataclasses.replace(
            state,
            tries=attempt.tries + 1,
            status=AttemptStatus.IN_PROGRESS,
            next_try=None,
            started=attempt.started or now,
        )
    return LeaseDecision(state)


def check_lease(attempt: Attempt, *, token: str, worker_id: str) -> None:
    """Refuse a worker that must stop: the attempt is finished, or another worker (or nobody) holds it."""
    if not attempt.open:
        raise errors.InvalidRequest(f"The rotation attempt {token} is {attempt.status}; stop working on it.")
    if attempt.lease_owner != worker_id:
        holder = attempt.lease_owner or "nobody"
        raise errors.InvalidRequest(
            f"Worker {worker_id} does not hold the lease on rotation attempt {token} ({holder} does); stop "
            "working on it."
        )


def step_recorded(attempt: Attempt, *, token: str, worker_id: str, now: datetime) -> Attempt:
    """A step started or ended under the worker's lease: the lease runs for another lease period."""
    check_lease(attempt, token=token, worker_id=worker_id)
    seconds = attempt.lease_seconds or DEFAULT_LEASE_SECONDS
    return dataclasses.replace(attempt, lease_expires=now + timedelta(seconds=seconds))


def _finished(attempt: Attempt, status: AttemptStatus, *, now: datetime, error: str | None) -> Attempt:
    return dataclasses.replace(
        attempt,
        status=status,
        finished=now,
        lease_owner=None,
        lease_expires=None,
        next_try=None,
        error=error,
    )


def succeed(attempt: Attempt, *, token: str, worker_id: str, now: datetime) -> Attempt:
    """The worker finished every step."""
    check_lease(attempt, token=token, worker_id=worker_id)
    return _finished(attempt, AttemptStatus.SUCCEEDED, now=now, error=None)


def fail_try(
    attempt: Attempt, *, token: str, worker_id: str, error: str, now: datetime, policy: RotationPolicy
) -> FailDecision:
    """The worker's try failed: retry after ``base * 2**(tries-1)`` seconds, or fail the attempt when the
    policy's tries are used up. The lease is released either way."""
    check_lease(attempt, token=token, worker_id=worker_id)
    reason = (error or FAILED_WITHOUT_MESSAGE)[:MAX_ERROR]
    if attempt.tries >= policy.max_tries:
        return FailDecision(
            _finished(attempt, AttemptStatus.FAILED, now=now, error=reason), final=True, delay_seconds=0.0
        )
    delay = policy.backoff_base_seconds * (2 ** max(attempt.tries - 1, 0))
    state = dataclasses.replace(
        attempt,
        lease_owner=None,
        lease_expires=None,
        error=reason,
        next_try=now + timedelta(seconds=delay),
    )
    return FailDecision(state, final=False, delay_seconds=delay)


def cancel(attempt: Attempt, *, token: str, now: datetime) -> Attempt:
    """CancelRotateSecret on an open attempt."""
    if not attempt.open:
        raise errors.InvalidRequest(
            f"The rotation attempt {token} is {attempt.status}; it cannot be cancelled."
        )
    return _finished(attempt, AttemptStatus.CANCELLED, now=now, error=CANCELLED_ERROR)
