"""``AssumeRoleProvider`` with a fake clock and a fake STS: a session is assumed on first use, reused until
less than 20 % of its lifetime is left, then replaced by exactly one AssumeRole however many calls want it; a
session refused as expired is replaced once; an STS failure keeps an unexpired session signing."""

from __future__ import annotations

import asyncio

import pytest

from coffer.client.assume_role import AssumedCredentials, AssumeRoleProvider, check_session_seconds
from coffer.client.credentials import Credentials, RefreshingProvider, current_credentials
from coffer.core import errors

LIFETIME = 3600.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeSts:
    """Sessions ``ASIA…0``, ``ASIA…1``, ... of LIFETIME seconds from the clock's now; ``gate`` (when set)
    holds every AssumeRole until it is opened; ``fail`` makes the next calls raise."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.fail: errors.CofferError | None = None
        self.entered = asyncio.Event()

    async def __call__(self) -> AssumedCredentials:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        n = self.calls - 1
        return AssumedCredentials(
            Credentials(f"ASIA{n:016d}", f"secret-{n}", f"token-{n}"), self.clock.now + LIFETIME
        )


def _provider() -> tuple[AssumeRoleProvider, FakeSts, FakeClock]:
    clock = FakeClock()
    sts = FakeSts(clock)
    return AssumeRoleProvider(sts, clock=clock, retry_seconds=5.0), sts, clock


async def test_assumed_on_first_use_and_refreshed_when_a_fifth_of_the_lifetime_is_left() -> None:
    provider, sts, clock = _provider()
    assert isinstance(provider, RefreshingProvider)
    with pytest.raises(errors.Unavailable):
        provider()  # nothing assumed yet: the synchronous view has nothing to give
    first = await current_credentials(provider)
    assert (first.access_key_id, first.session_token, sts.calls) == ("ASIA" + "0" * 16, "token-0", 1)
    assert provider() is first
    clock.now += LIFETIME * 0.8 - 1  # just over 20 % left: still the same session
    assert await provider.current() is first
    assert sts.calls == 1
    clock.now += 1  # 20 % left: replaced before it expires
    second = await provider.current()
    assert second.access_key_id == "ASIA" + "0" * 15 + "1" and sts.calls == 2
    assert provider() is second and provider.assumed == 2


async def test_one_assume_role_for_many_concurrent_callers() -> None:
    provider, sts, clock = _provider()
    sts.gate = asyncio.Event()
    waiting = [asyncio.create_task(provider.current()) for _ in range(20)]
    # The first task is in AssumeRole; the other 19, scheduled before this test wakes up, wait on the lock.
    await sts.entered.wait()
    sts.gate.set()
    got = await asyncio.gather(*waiting)
    assert sts.calls == 1 and {c.access_key_id for c in got} == {"ASIA" + "0" * 16}

    clock.now += LIFETIME * 0.9  # due for a refresh: again one AssumeRole for all
    sts.gate = asyncio.Event()
    sts.entered.clear()
    waiting = [asyncio.create_task(provider.current()) for _ in range(20)]
    await sts.entered.wait()
    sts.gate.set()
    got = await asyncio.gather(*waiting)
    assert sts.calls == 2 and {c.session_token for c in got} == {"token-1"}


async def test_an_expired_session_is_replaced_once() -> None:
    provider, sts, _clock = _provider()
    used = await provider.current()
    await asyncio.gather(*(provider.expired(used) for _ in range(5)))  # five calls refused with it
    assert sts.calls == 2
    fresh = await provider.current()
    assert fresh.session_token == "token-1"
    await provider.expired(used)  # a late report about the old session changes nothing
    assert sts.calls == 2 and await provider.current() is fresh


async def test_an_sts_failure_keeps_an_unexpired_session_and_is_retried_later() -> None:
    provider, sts, clock = _provider()
    first = await provider.current()
    clock.now += LIFETIME * 0.9
    sts.fail = errors.Unavailable("the gateway is down")
    assert await provider.current() is first  # still valid for 6 minutes: keeps signing
    assert sts.calls == 2
    assert await provider.current() is first  # not asked again before retry_seconds
    assert sts.calls == 2
    clock.now += 5
    assert await provider.current() is first
    assert sts.calls == 3
    clock.now += LIFETIME  # expired, and STS still failing: the caller learns why
    with pytest.raises(errors.Unavailable):
        await provider.current()
    sts.fail = None
    clock.now += 5
    assert (await provider.current()).session_token == "token-4"


def test_session_seconds_are_bounded_as_sts_bounds_them() -> None:
    assert check_session_seconds(900) == 900 and check_session_seconds(43200) == 43200
    for bad in (899, 43201):
        with pytest.raises(errors.InvalidParameter):
            check_session_seconds(bad)
