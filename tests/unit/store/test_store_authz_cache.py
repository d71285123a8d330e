"""coffer.store.authz.StoreAuthz: the decision cache is keyed so that a change of the secret (its change
sequence), of the caller's policies or of the request keys is a miss, and policies that look at the clock or
the source address are never cached."""

from __future__ import annotations

import dataclasses

from coffer.clock import SystemClock
from coffer.core.model import Tag
from coffer.core.policy import PolicyKind, parse_policy
from coffer.core.principal import Principal, PrincipalKind, legacy_principal
from coffer.core.secret_keys import RequestParams, SecretFacts
from coffer.store.authz import StoreAuthz, decided

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:app/db-AbC123"
SECRET = SecretFacts(
    arn=ARN, name="app/db", account="000000000000", region="local-1", tags=(Tag("team", "a"),)
)
GSV = "secretsmanager:GetSecretValue"


def user(policy: str) -> Principal:
    return Principal(
        arn="arn:aws:iam::000000000000:user/alice",
        account="000000000000",
        kind=PrincipalKind.USER,
        name="alice",
        policies=(parse_policy(policy, PolicyKind.IDENTITY),),
    )


def authz() -> StoreAuthz:
    return StoreAuthz(region="local-1", account="000000000000", clock=SystemClock())


TAGGED = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:GetSecretValue",'
    '"Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/team":"a"}}}]}'
)


async def test_repeated_decisions_hit_the_cache_until_the_secret_changes() -> None:
    a = authz()
    alice = user(TAGGED)
    assert (await a.decide(alice, GSV, "app/db", SECRET)).allowed
    assert (await a.decide(alice, GSV, "app/db", SECRET)).allowed
    assert (a.hits, a.misses) == (1, 1)
    retagged = dataclasses.replace(SECRET, tags=(Tag("team", "b"),), change_seq=1)
    assert not (await a.decide(alice, GSV, "app/db", retagged)).allowed
    assert a.misses == 2
    # other request keys: another entry
    await a.decide(alice, GSV, "app/db", SECRET, RequestParams(version_stage="AWSPREVIOUS"))
    assert a.misses == 3


async def test_time_conditions_are_never_cached() -> None:
    a = authz()
    timed = user(
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*",'
        '"Condition":{"DateLessThan":{"aws:CurrentTime":"2999-01-01T00:00:00Z"}}}]}'
    )
    for _ in range(3):
        assert (await a.decide(timed, GSV, "app/db", SECRET)).allowed
    assert (a.hits, a.misses) == (0, 3)


async def test_new_policies_of_the_same_principal_miss() -> None:
    a = authz()
    assert (await a.decide(user(TAGGED), GSV, "app/db", SECRET)).allowed
    deny_all = '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}'
    assert not (await a.decide(user(deny_all), GSV, "app/db", SECRET)).allowed


def test_who_is_decided() -> None:
    assert decided(legacy_principal("user/admin"))
    assert not decided(legacy_principal("service/rotation"))
    assert not decided(None)
