"""core/rotation.py: the rotation attempt state machine, every transition and every refusal, without I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from coffer.core import errors
from coffer.core import rotation as m
from coffer.core.rotation import Attempt, AttemptStatus, RotationPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOKEN = "tok-1"
POLICY = RotationPolicy(max_tries=3, backoff_base_seconds=2.0, default_lease_seconds=60)
FINAL = (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CANCELLED)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def leased(worker: str = "w1", *, now: datetime = T0, seconds: int = 30) -> Attempt:
    decision = m.acquire(m.start(now), worker_id=worker, now=now, lease_seconds=seconds)
    assert decision.state is not None
    return decision.state


def final(status: AttemptStatus) -> Attempt:
    return Attempt(status=status, tries=1, started=T0, finished=at(1))


def test_constants_keep_their_wire_values() -> None:
    assert m.STEPS == ("createSecret", "setSecret", "testSecret", "finishSecret")
    assert m.STEP_STATUSES == ("started", "succeeded", "failed")
    assert [s.value for s in AttemptStatus] == ["Pending", "InProgress", "Succeeded", "Failed", "Cancelled"]
    assert m.BUILTIN_ROTATORS == (
        "random-value",
        "postgresql-single-user",
        "postgresql-alternating-users",
        "mysql-single-user",
        "mysql-alternating-users",
    )
    assert (m.Trigger.API.value, m.Trigger.SCHEDULE.value) == ("api", "schedule")


def test_start_is_pending_and_due_now() -> None:
    a = m.start(T0)
    assert a == Attempt(status=AttemptStatus.PENDING, next_try=T0)
    assert a.open and a.claimable(T0) and not a.claimable(at(-1))


def test_first_lease_starts_try_one() -> None:
    a = leased("w1", seconds=30)
    assert a.status is AttemptStatus.IN_PROGRESS and a.tries == 1
    assert (a.lease_owner, a.lease_expires, a.lease_seconds) == ("w1", at(30), 30)
    assert a.started == T0 and a.next_try is None
    assert a.lease_live(at(29)) and not a.claimable(at(29))


def test_own_lease_is_renewed_without_a_new_try() -> None:
    a = leased("w1")
    renewed = m.acquire(a, worker_id="w1", now=at(10), lease_seconds=30)
    assert renewed.acquired and renewed.state is not None
    assert renewed.state.tries == 1 and renewed.state.lease_expires == at(40)


def test_live_lease_of_another_worker_refuses() -> None:
    a = leased("w1")
    decision = m.acquire(a, worker_id="w2", now=at(10), lease_seconds=30)
    assert not decision.acquired and "worker w1 holds the lease until" in decision.reason


def test_lease_expiry_lets_another_worker_take_over_as_a_new_try() -> None:
    a = leased("w1", seconds=30)
    assert not a.lease_live(at(30)) and a.claimable(at(30))
    taken = m.acquire(a, worker_id="w2", now=at(30), lease_seconds=30).state
    assert taken is not None
    assert (taken.lease_owner, taken.tries, taken.started) == ("w2", 2, T0)


def test_next_try_not_due_refuses() -> None:
    failed = m.fail_try(leased(), token=TOKEN, worker_id="w1", error="x", now=at(1), policy=POLICY)
    decision = m.acquire(failed.state, worker_id="w1", now=at(2), lease_seconds=30)
    assert not decision.acquired and decision.reason.startswith("the next try is due at")
    assert m.acquire(failed.state, worker_id="w1", now=at(3), lease_seconds=30).acquired


@pytest.mark.parametrize("status", FINAL)
def test_finished_attempt_refuses_a_lease(status: AttemptStatus) -> None:
    decision = m.acquire(final(status), worker_id="w1", now=T0, lease_seconds=30)
    assert not decision.acquired and decision.reason == f"the attempt is {status.value}"
    assert not final(status).claimable(at(100))


def test_lease_seconds_default_and_cap() -> None:
    assert m.lease_seconds_for(0, POLICY) == 60
    assert m.lease_seconds_for(-5, POLICY) == 60
    assert m.lease_seconds_for(10, POLICY) == 10
    assert m.lease_seconds_for(10**6, POLICY) == m.MAX_LEASE_SECONDS


def test_step_extends_the_lease_by_its_period() -> None:
    a = leased("w1", seconds=30)
    assert m.step_recorded(a, token=TOKEN, worker_id="w1", now=at(20)).lease_expires == at(50)
    no_period = dataclasses.replace(a, lease_seconds=None)
    assert m.step_recorded(no_period, token=TOKEN, worker_id="w1", now=T0).lease_expires == at(60)


@pytest.mark.parametrize(
    "transition",
    [
        lambda a: m.step_recorded(a, token=TOKEN, worker_id="w2", now=T0),
        lambda a: m.succeed(a, token=TOKEN, worker_id="w2", now=T0),
        lambda a: m.fail_try(a, token=TOKEN, worker_id="w2", error="e", now=T0, policy=POLICY),
    ],
    ids=["step", "succeed", "fail"],
)
def test_worker_without_the_lease_is_refused(transition: Callable[[Attempt], object]) -> None:
    with pytest.raises(errors.InvalidRequest, match=r"Worker w2 does not hold the lease .* \(w1 does\)"):
        transition(leased("w1"))
    with pytest.raises(errors.InvalidRequest, match=r"\(nobody does\)"):
        transition(m.start(T0))


@pytest.mark.parametrize("status", FINAL)
def test_finished_attempt_refuses_steps_outcomes_and_cancel(status: AttemptStatus) -> None:
    a = dataclasses.replace(final(status), lease_owner="w1")
    stop = f"The rotation attempt {TOKEN} is {status.value}; stop working on it."
    with pytest.raises(errors.InvalidRequest, match=stop):
        m.step_recorded(a, token=TOKEN, worker_id="w1", now=T0)
    with pytest.raises(errors.InvalidRequest, match=stop):
        m.succeed(a, token=TOKEN, worker_id="w1", now=T0)
    with pytest.raises(errors.InvalidRequest, match=stop):
        m.fail_try(a, token=TOKEN, worker_id="w1", error="e", now=T0, policy=POLICY)
    with pytest.raises(errors.InvalidRequest, match="cannot be cancelled"):
        m.cancel(a, token=TOKEN, now=T0)


def test_succeed_finishes_and_releases() -> None:
    a = dataclasses.replace(leased("w1"), error="earlier try failed")
    done = m.succeed(a, token=TOKEN, worker_id="w1", now=at(5))
    assert done.status is AttemptStatus.SUCCEEDED and not done.open
    assert (done.finished, done.lease_owner, done.lease_expires, done.next_try, done.error) == (
        at(5),
        None,
        None,
        None,
        None,
    )
    assert done.tries == 1


def test_failed_try_backs_off_exponentially_then_fails() -> None:
    a = leased("w1")
    first = m.fail_try(a, token=TOKEN, worker_id="w1", error="boom", now=at(1), policy=POLICY)
    assert not first.final and first.delay_seconds == 2.0
    s = first.state
    assert (s.status, s.lease_owner, s.lease_expires, s.error, s.next_try) == (
        AttemptStatus.IN_PROGRESS,
        None,
        None,
        "boom",
        at(3),
    )
    second_try = m.acquire(s, worker_id="w2", now=at(3), lease_seconds=30).state
    assert second_try is not None and second_try.tries == 2
    second = m.fail_try(second_try, token=TOKEN, worker_id="w2", error="", now=at(4), policy=POLICY)
    assert second.delay_seconds == 4.0 and second.state.error == m.FAILED_WITHOUT_MESSAGE
    third_try = m.acquire(second.state, worker_id="w2", now=at(8), lease_seconds=30).state
    assert third_try is not None and third_try.tries == 3
    last = m.fail_try(third_try, token=TOKEN, worker_id="w2", error="x" * 10_000, now=at(9), policy=POLICY)
    assert last.final and last.delay_seconds == 0.0
    assert last.state.status is AttemptStatus.FAILED and last.state.finished == at(9)
    assert last.state.next_try is None and last.state.lease_owner is None
    assert last.state.error == "x" * m.MAX_ERROR


@pytest.mark.parametrize("holder", [None, "w1"])
def test_cancel_an_open_attempt(holder: str | None) -> None:
    a = leased("w1") if holder else m.start(T0)
    cancelled = m.cancel(a, token=TOKEN, now=at(7))
    assert cancelled.status is AttemptStatus.CANCELLED and not cancelled.open
    assert (cancelled.finished, cancelled.lease_owner, cancelled.next_try, cancelled.error) == (
        at(7),
        None,
        None,
        m.CANCELLED_ERROR,
    )
