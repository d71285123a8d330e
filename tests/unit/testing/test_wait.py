"""The tests' polling helper: returns the first value that satisfies the condition, retries what the probe
may raise while waiting, and fails with the message and the last value or exception on timeout."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from coffer.testing.wait import eventually, eventually_sync


def counter() -> Callable[[], int]:
    """A probe that returns 1, 2, 3... on its first, second, third call."""
    calls = [0]

    def probe() -> int:
        calls[0] += 1
        return calls[0]

    return probe


async def test_a_plain_probe_is_polled_until_the_value_is_truthy() -> None:
    values = iter([None, 0, "", "done", "later"])
    assert await eventually(lambda: next(values), timeout=5, interval=0) == "done"


async def test_a_coroutine_probe_is_awaited_and_until_decides() -> None:
    probe = counter()

    async def async_probe() -> int:
        return probe()

    assert await eventually(async_probe, until=lambda n: n >= 3, timeout=5, interval=0) == 3


async def test_a_falsy_value_can_be_the_awaited_one() -> None:
    values = iter([True, True, False])
    assert (
        await eventually(lambda: next(values), until=lambda present: not present, timeout=5, interval=0)
        is False
    )


async def test_assertion_errors_mean_not_yet_other_errors_propagate_at_once() -> None:
    probe = counter()

    def asserting() -> int:
        n = probe()
        assert n >= 3, n
        return n

    assert await eventually(asserting, timeout=5, interval=0) == 3

    def broken() -> int:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await eventually(broken, timeout=5, interval=0)


async def test_retry_on_names_the_exceptions_that_mean_not_yet() -> None:
    attempts = iter([LookupError("a"), LookupError("b"), None])

    def flaky() -> str:
        exc = next(attempts)
        if exc is not None:
            raise exc
        return "ok"

    assert await eventually(flaky, retry_on=(LookupError,), timeout=5, interval=0) == "ok"


async def test_timeout_fails_with_the_message_and_the_last_value() -> None:
    probe = counter()
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"the count to be big: not reached within 0\.2s; last: \d+"):
        await eventually(
            probe, until=lambda n: n > 10**9, timeout=0.2, interval=0.01, message="the count to be big"
        )
    assert 0.2 <= time.monotonic() - started < 5


async def test_timeout_chains_the_last_exception() -> None:
    def never() -> None:
        raise AssertionError("still 3 rows")

    with pytest.raises(AssertionError, match="still 3 rows") as caught:
        await eventually(never, timeout=0.05, interval=0.01)
    assert isinstance(caught.value.__cause__, AssertionError)


async def test_the_probe_runs_at_least_once_even_with_no_time_left() -> None:
    assert await eventually(lambda: "at once", timeout=0) == "at once"


def test_the_sync_twin_polls_and_fails_the_same_way() -> None:
    probe = counter()
    assert eventually_sync(probe, until=lambda n: n >= 3, timeout=5, interval=0) == 3
    with pytest.raises(AssertionError, match=r"^rows gone: not reached within 0\.05s; last: \[1\]$"):
        eventually_sync(
            lambda: [1], until=lambda rows: not rows, timeout=0.05, interval=0.01, message="rows gone"
        )
    retried = iter([ValueError("no"), None])

    def flaky() -> str:
        exc = next(retried)
        if exc is not None:
            raise exc
        return "yes"

    assert eventually_sync(flaky, retry_on=(ValueError,), timeout=5, interval=0) == "yes"
