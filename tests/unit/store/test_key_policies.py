"""The store's KeyPolicies: one fetch per key, decisions from memory, eviction by the key-change stream
(including a fetch that raced an eviction), the default key exempt, cross-account checks."""

from __future__ import annotations

import asyncio
import json

import pytest

from coffer.core import errors
from coffer.core.policy.keypolicy import default_key_policy_text, parse_key_policy
from coffer.core.principal import Principal, PrincipalKind, legacy_principal
from coffer.store.key_policies import ACCESS_TO_KMS_DENIED, KeyPolicies, KeyPolicyEntry

ACCT = "000000000000"
OTHER = "111111111111"
KEY = f"arn:aws:kms:local-1:{ACCT}:key/k1"
AWS_KEY = f"arn:aws:kms:local-1:{ACCT}:key/aws1"
CAROL = Principal(arn=f"arn:aws:iam::{ACCT}:user/carol", account=ACCT, kind=PrincipalKind.USER, name="carol")


def _only_carol() -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": CAROL.arn}, "Action": "kms:*", "Resource": "*"},
                {
                    "Sid": "Other",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                },
            ],
        }
    )


class Source:
    def __init__(self) -> None:
        self.policies = {KEY: _only_carol(), AWS_KEY: default_key_policy_text(ACCT)}
        self.fetches: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, key_id: str) -> KeyPolicyEntry:
        self.fetches.append(key_id)
        if self.gate is not None:
            await self.gate.wait()
        return KeyPolicyEntry(
            key_arn=key_id,
            account=ACCT,
            aws_managed=key_id == AWS_KEY,
            policy=parse_key_policy(self.policies[key_id]),
        )


async def test_one_fetch_then_memory_and_the_key_policy_decides() -> None:
    source = Source()
    kp = KeyPolicies(source)
    admin = legacy_principal("user/admin")
    with pytest.raises(errors.AccessDenied) as info:  # not loaded: fail closed
        kp.check(CAROL, "kms:Decrypt", KEY, default_key=False)
    assert info.value.message == ACCESS_TO_KMS_DENIED
    await kp.check_use(CAROL, "kms:Decrypt", KEY)
    await kp.check_use(CAROL, "kms:GenerateDataKey", KEY)
    with pytest.raises(errors.AccessDenied):
        await kp.check_use(admin, "kms:Decrypt", KEY)
    assert source.fetches == [KEY]
    # the default key is exempt; services are not checked here
    kp.check(admin, "kms:Decrypt", KEY, default_key=True)
    await kp.check_use(admin, "kms:Decrypt", AWS_KEY)
    await kp.check_use(legacy_principal("service/rotation"), "kms:Decrypt", KEY)
    await kp.check_use(None, "kms:Decrypt", KEY)
    # cross-account: the key policy names OTHER's root for Decrypt; the default key cannot be shared
    assert kp.allows_account(KEY, OTHER)
    assert not kp.allows_account(KEY, "222222222222")
    assert not kp.allows_account(AWS_KEY, OTHER)


async def test_eviction_refetches_and_a_raced_fetch_is_not_cached() -> None:
    source = Source()
    kp = KeyPolicies(source)
    admin = legacy_principal("user/admin")
    await kp.load(KEY)
    source.policies[KEY] = default_key_policy_text(ACCT)
    assert kp.evict(KEY)
    await kp.check_use(admin, "kms:Decrypt", KEY)  # the new policy delegates to the admin's identity policy
    assert source.fetches == [KEY, KEY]
    # a fetch in flight when the key changes again must not leave its (stale) answer cached
    kp.clear()
    source.gate = asyncio.Event()
    pending = asyncio.create_task(kp.load(KEY))
    await asyncio.sleep(0)
    kp.evict(KEY)
    source.gate.set()
    await pending
    assert kp.cached(KEY) is None
    assert len(kp) == 0
