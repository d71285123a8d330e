"""AWS KMS's rule: the key policy is required; an identity policy counts only through the root statement."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coffer.core import errors
from coffer.core.policy import Policy, PolicyKind, Reason, parse_policy
from coffer.core.policy.keypolicy import (
    LOCKOUT_MESSAGE,
    allows_account,
    authorize_key,
    aws_managed_key_policy_text,
    check_lockout,
    decide_key,
    default_key_policy_text,
    parse_key_policy,
)
from coffer.core.principal import Principal, PrincipalKind

ACCT = "111122223333"
OTHER = "444455556666"
KEY = f"arn:aws:kms:us-east-1:{ACCT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _identity(*statements: Any) -> tuple[Policy, ...]:
    doc = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    return (parse_policy(doc, PolicyKind.IDENTITY, name="inline"),)


def _user(name: str, account: str = ACCT, *statements: Any) -> Principal:
    return Principal(
        arn=f"arn:aws:iam::{account}:user/{name}",
        account=account,
        kind=PrincipalKind.USER,
        name=name,
        policies=_identity(*statements) if statements else (),
    )


def _key_policy(*statements: Any) -> Policy:
    return parse_key_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def _allow(principal: str, action: str) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, "Resource": "*"}


ALLOW_KMS = {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
ALLOW_DECRYPT = {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}


def test_default_policy_delegates_to_identity_policies() -> None:
    policy = parse_key_policy(default_key_policy_text(ACCT))
    assert decide_key(
        _user("alice", ACCT, ALLOW_DECRYPT), "kms:Decrypt", KEY, policy, key_account=ACCT
    ).allowed
    denied = decide_key(_user("bob", ACCT), "kms:Decrypt", KEY, policy, key_account=ACCT)
    assert not denied.allowed
    assert denied.reason is Reason.NO_IDENTITY_ALLOW


def test_identity_policy_alone_is_not_enough_without_the_root_statement() -> None:
    policy = _key_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCT}:user/carol"},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    alice = _user("alice", ACCT, ALLOW_KMS)
    decision = decide_key(alice, "kms:Decrypt", KEY, policy, key_account=ACCT)
    assert not decision.allowed
    assert decision.message == (
        f"User: arn:aws:iam::{ACCT}:user/alice is not authorized to perform: kms:Decrypt on resource: {KEY} "
        "because no resource-based policy allows the kms:Decrypt action"
    )
    with pytest.raises(errors.AccessDenied):
        authorize_key(alice, "kms:Decrypt", KEY, policy, key_account=ACCT)


def test_key_policy_naming_the_user_suffices_without_identity_policy() -> None:
    policy = _key_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCT}:user/carol"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        }
    )
    decision = decide_key(_user("carol", ACCT), "kms:Decrypt", KEY, policy, key_account=ACCT)
    assert decision.allowed and decision.reason is Reason.ALLOW_RESOURCE
    assert not decide_key(_user("carol", ACCT), "kms:Encrypt", KEY, policy, key_account=ACCT).allowed


def test_explicit_deny_in_either_wins() -> None:
    policy = _key_policy(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"},
        {
            "Sid": "NoDecrypt",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        },
    )
    d = decide_key(_user("alice", ACCT, ALLOW_KMS), "kms:Decrypt", KEY, policy, key_account=ACCT)
    assert not d.allowed and d.reason is Reason.EXPLICIT_DENY_RESOURCE
    default = parse_key_policy(default_key_policy_text(ACCT))
    alice = _user("alice", ACCT, ALLOW_KMS, {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"})
    d = decide_key(alice, "kms:Decrypt", KEY, default, key_account=ACCT)
    assert not d.allowed and d.reason is Reason.EXPLICIT_DENY_IDENTITY


def test_account_root_is_allowed_only_through_the_root_statement() -> None:
    root = Principal(arn=f"arn:aws:iam::{ACCT}:root", account=ACCT, kind=PrincipalKind.ACCOUNT, name="root")
    assert decide_key(
        root, "kms:Decrypt", KEY, parse_key_policy(default_key_policy_text(ACCT)), key_account=ACCT
    ).allowed
    only_carol = _key_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCT}:user/carol"},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    assert not decide_key(root, "kms:Decrypt", KEY, only_carol, key_account=ACCT).allowed


def test_cross_account_needs_both_sides() -> None:
    shared = _key_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        }
    )
    assert decide_key(
        _user("dan", OTHER, ALLOW_DECRYPT), "kms:Decrypt", KEY, shared, key_account=ACCT
    ).allowed
    assert not decide_key(_user("dan", OTHER), "kms:Decrypt", KEY, shared, key_account=ACCT).allowed
    default = parse_key_policy(default_key_policy_text(ACCT))
    assert not decide_key(
        _user("dan", OTHER, ALLOW_DECRYPT), "kms:Decrypt", KEY, default, key_account=ACCT
    ).allowed
    assert allows_account(shared, KEY, ACCT, OTHER, "kms:Decrypt")
    assert not allows_account(default, KEY, ACCT, OTHER, "kms:Decrypt")
    assert allows_account(default, KEY, ACCT, ACCT, "kms:Decrypt")


def test_aws_managed_key_policy_allows_crypto_only_via_the_service() -> None:
    policy = parse_key_policy(aws_managed_key_policy_text(ACCT, "us-east-1", "secretsmanager"))
    alice = _user("alice", ACCT, ALLOW_KMS)
    assert not decide_key(alice, "kms:Decrypt", KEY, policy, key_account=ACCT).allowed
    via = {"kms:ViaService": ("secretsmanager.us-east-1.amazonaws.com",)}
    assert decide_key(_user("bob", ACCT), "kms:Decrypt", KEY, policy, key_account=ACCT, keys=via).allowed
    assert decide_key(alice, "kms:DescribeKey", KEY, policy, key_account=ACCT).allowed
    assert not decide_key(
        _user("dan", OTHER, ALLOW_KMS), "kms:Decrypt", KEY, policy, key_account=ACCT, keys=via
    ).allowed


def test_malformed_policy_and_lockout() -> None:
    for bad in (
        "",
        "{",
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}',
    ):
        with pytest.raises(errors.InvalidParameter) as info:
            parse_key_policy(bad)
        assert info.value.code == "MalformedPolicyDocumentException"
    only_carol = _key_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCT}:user/carol"},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    alice = _user("alice", ACCT, ALLOW_KMS)
    with pytest.raises(errors.InvalidParameter) as info:
        check_lockout(alice, KEY, only_carol, key_account=ACCT)
    assert info.value.code == "MalformedPolicyDocumentException"
    assert info.value.message == LOCKOUT_MESSAGE
    check_lockout(alice, KEY, parse_key_policy(default_key_policy_text(ACCT)), key_account=ACCT)
