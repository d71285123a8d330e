"""Request rates (``coffer.core.throttle``) with a fake clock: refill, burst, groups, the principal's share
of its account's rate, lossless eviction of idle buckets, configuration."""

from __future__ import annotations

import pytest

from coffer.core import errors
from coffer.core.throttle import (
    DEFAULT_GROUPS,
    RateGroup,
    Throttle,
    parse_rates,
    rate_groups,
)
from coffer.settings import Settings

GET = "secretsmanager:GetSecretValue"
DESCRIBE = "secretsmanager:DescribeSecret"
PUT = "secretsmanager:PutSecretValue"
ACCT = "111111111111"
ALICE = "arn:aws:iam::111111111111:user/alice"
BOB = "arn:aws:iam::111111111111:user/bob"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def burst(throttle: Throttle, principal: str, action: str, n: int, account: str = ACCT) -> int:
    return sum(throttle.admit(account, principal, action) for _ in range(n))


def test_a_burst_is_the_bucket_then_the_refill_rate() -> None:
    clock = Clock()
    t = Throttle([RateGroup(10, (GET,))], principal_share=1.0, clock=clock)
    assert burst(t, ALICE, GET, 25) == 10  # a full bucket: one second's worth
    clock.now += 0.5
    assert burst(t, ALICE, GET, 25) == 5  # refilled at 10/s
    clock.now += 100
    assert burst(t, ALICE, GET, 25) == 10  # never more than the bucket holds


def test_a_refused_call_takes_no_token() -> None:
    clock = Clock()
    t = Throttle([RateGroup(2, (GET,))], principal_share=1.0, clock=clock)
    assert burst(t, ALICE, GET, 2) == 2
    assert burst(t, ALICE, GET, 50) == 0
    clock.now += 0.5
    assert burst(t, ALICE, GET, 5) == 1


def test_check_raises_throttling_exception() -> None:
    t = Throttle([RateGroup(1, (GET,))], principal_share=1.0, clock=Clock())
    t.check(ACCT, ALICE, GET)
    with pytest.raises(errors.Throttling) as refused:
        t.check(ACCT, ALICE, GET)
    assert refused.value.code == "ThrottlingException" and refused.value.message == "Rate exceeded."


def test_a_group_shares_one_rate_and_other_groups_are_apart() -> None:
    t = Throttle([RateGroup(4, (GET, DESCRIBE)), RateGroup(2, (PUT,))], principal_share=1.0, clock=Clock())
    assert burst(t, ALICE, GET, 3) == 3
    assert burst(t, ALICE, DESCRIBE, 3) == 1
    assert burst(t, ALICE, PUT, 3) == 2


def test_actions_without_a_rate_are_not_throttled() -> None:
    t = Throttle([RateGroup(1, (GET,))], clock=Clock())
    assert burst(t, ALICE, "iam:CreateUser", 1000) == 1000
    assert len(t) == 0


def test_a_noisy_principal_takes_at_most_its_share_and_others_still_get_theirs() -> None:
    clock = Clock()
    t = Throttle([RateGroup(10, (GET,))], principal_share=0.5, clock=clock)
    assert burst(t, ALICE, GET, 100) == 5  # half the account's bucket
    assert burst(t, BOB, GET, 5) == 5  # the other half is bob's
    clock.now += 1.0
    # both refill at their share; together never above the account's rate
    assert burst(t, ALICE, GET, 100) == 5
    assert burst(t, BOB, GET, 100) == 5


def test_the_account_rate_bounds_all_its_principals() -> None:
    t = Throttle([RateGroup(10, (GET,))], principal_share=0.5, clock=Clock())
    admitted = sum(burst(t, f"arn:aws:iam::{ACCT}:user/u{i}", GET, 5) for i in range(10))
    assert admitted == 10
    # another account has its own rate
    assert burst(t, "arn:aws:iam::222222222222:user/x", GET, 5, account="222222222222") == 5


def test_idle_buckets_are_evicted_and_eviction_changes_nothing() -> None:
    clock = Clock()
    t = Throttle([RateGroup(10, (GET,))], principal_share=0.5, clock=clock, sweep_seconds=5)
    for i in range(1000):
        t.admit(ACCT, f"user{i}", GET)
    assert len(t) == 1001
    clock.now += 1.0  # a principal's bucket is full again after 5 / 5 = 1 s; the sweep is not due yet
    t.admit(ACCT, ALICE, GET)
    assert len(t) == 1002
    clock.now += 5.0
    assert t.admit(ACCT, ALICE, GET)  # the sweep runs first: everything idle for >= 1 s goes
    assert len(t) == 2  # the account's and alice's buckets, just used
    # a principal whose bucket was evicted starts full, as it would have been
    assert burst(t, "user1", GET, 10) == 5


def test_a_busy_bucket_is_not_evicted() -> None:
    clock = Clock()
    t = Throttle([RateGroup(10, (GET,))], principal_share=0.5, clock=clock, sweep_seconds=1)
    assert burst(t, ALICE, GET, 10) == 5
    admitted = 0
    for _ in range(10):
        clock.now += 0.5
        admitted += burst(t, ALICE, GET, 10)
        assert len(t) == 2  # used every 0.5 s, never full again: kept, its debt with it
    assert admitted == 25  # 5 s at alice's 5/s


def test_default_groups_are_aws_quotas() -> None:
    rates = {action: g.rate for g in DEFAULT_GROUPS for action in g.actions}
    assert rates[GET] == rates[DESCRIBE] == 10_000
    assert rates[PUT] == rates["secretsmanager:UpdateSecret"] == 50
    assert rates["secretsmanager:CreateSecret"] == 50
    assert rates["secretsmanager:BatchGetSecretValue"] == 100
    groups = [g for g in DEFAULT_GROUPS if GET in g.actions]
    assert len(groups) == 1 and DESCRIBE in groups[0].actions


def test_overrides_set_a_group_rate_or_add_a_group() -> None:
    groups = rate_groups({"GetSecretValue": 5, "kms:Encrypt": 100})
    rates = {action: g.rate for g in groups for action in g.actions}
    assert rates[GET] == rates[DESCRIBE] == 5  # the whole group
    assert rates["kms:Encrypt"] == 100
    with pytest.raises(ValueError):
        rate_groups({"GetSecretValue": 0})
    with pytest.raises(ValueError):
        rate_groups({"GetSecretValue": True})


def test_settings_read_the_throttle_keys() -> None:
    s = Settings.from_env({})
    assert s.throttle and s.throttle_rates == () and s.throttle_principal_share == 0.5
    s = Settings.from_env(
        {
            "COFFER_THROTTLE": "off",
            "COFFER_THROTTLE_RATES": '{"GetSecretValue": 5}',
            "COFFER_THROTTLE_PRINCIPAL_SHARE": "0.25",
        }
    )
    assert not s.throttle and s.throttle_rates == (("GetSecretValue", 5),)
    assert s.throttle_principal_share == 0.25
    with pytest.raises(ValueError):
        Settings.from_env({"COFFER_THROTTLE": "maybe"})
    with pytest.raises(ValueError):
        parse_rates("[1, 2]")
    with pytest.raises(ValueError):
        Throttle(principal_share=0)
