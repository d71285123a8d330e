"""The pure IAM rules (coffer.core.iam): names, tags, durations, ARNs and the AssumeRole decision over the
policy engine, with trust policies (PolicyKind.TRUST)."""

from __future__ import annotations

import json

import pytest

from coffer.core import errors
from coffer.core import iam as rules
from coffer.core.policy import MalformedPolicy, PolicyKind, parse_policy
from coffer.core.principal import Principal, PrincipalKind, admin_policy
from coffer.store.iam.repository import MAX_NOTIFY_BYTES, notify_payload
from coffer.store.iam.servicer import decode_marker, encode_marker

ACCT = "111122223333"
OTHER = "444455556666"
ROLE = rules.RoleRef(ACCT, "app", f"arn:aws:iam::{ACCT}:role/app")


def trust(principal: object, effect: str = "Allow") -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": effect, "Principal": principal, "Action": "sts:AssumeRole"}],
        }
    )


def user(name: str, account: str = ACCT, *, policies: tuple[object, ...] = ()) -> Principal:
    return Principal(
        arn=f"arn:aws:iam::{account}:user/{name}",
        account=account,
        kind=PrincipalKind.USER,
        name=name,
        policies=policies,  # type: ignore[arg-type]
    )


ALLOW_ASSUME = parse_policy(
    json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE.arn}],
        }
    ),
    PolicyKind.IDENTITY,
)


@pytest.mark.parametrize("name", ["alice", "a", "A_b+c=d,e.f@g-h", "x" * 64])
def test_valid_names(name: str) -> None:
    assert rules.check_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "has space", "slash/name", "ünïcode", "semi;colon"])
def test_invalid_names_are_validation_errors(name: str) -> None:
    with pytest.raises(errors.IamValidation) as exc:
        rules.check_name(name, "userName")
    assert exc.value.code == "ValidationError" and "userName" in exc.value.message


def test_policy_names_may_be_128_long() -> None:
    assert rules.check_name("p" * 128, "policyName", rules.POLICY_NAME_MAX)
    with pytest.raises(errors.IamValidation):
        rules.check_name("p" * 129, "policyName", rules.POLICY_NAME_MAX)


@pytest.mark.parametrize("session", ["s1", "a" * 64, "user@example.com", "x=y,z.w-v_u+t"])
def test_session_names(session: str) -> None:
    assert rules.check_session_name(session) == session


@pytest.mark.parametrize("session", ["s", "a" * 65, "with space", "a/b", "ñañ"])
def test_bad_session_names(session: str) -> None:
    with pytest.raises(errors.IamValidation, match="roleSessionName"):
        rules.check_session_name(session)


def test_paths() -> None:
    assert rules.check_path(None) == "/" and rules.check_path("/team/a/") == "/team/a/"
    for bad in ("team", "/team", "team/"):
        with pytest.raises(errors.IamValidation):
            rules.check_path(bad)


def test_tags_rules() -> None:
    assert rules.check_tags([("team", "a"), ("env", "")]) == {"team": "a", "env": ""}
    with pytest.raises(errors.InvalidParameter, match="aws:"):
        rules.check_tags([("aws:owner", "x")])
    with pytest.raises(errors.InvalidParameter, match="Duplicate tag keys"):
        rules.check_tags([("Team", "a"), ("team", "b")])
    with pytest.raises(errors.IamLimitExceeded):
        rules.check_tags([(f"k{i}", "v") for i in range(51)])
    with pytest.raises(errors.IamValidation):
        rules.check_tags([("", "v")])
    assert rules.merge_tags({"Team": "a", "env": "x"}, {"team": "b"}) == {"env": "x", "team": "b"}
    assert rules.remove_tags({"Team": "a", "env": "x"}, ["TEAM"]) == {"env": "x"}


def test_session_duration_bounds() -> None:
    assert rules.session_duration(None, 7200) == 3600
    assert rules.session_duration(None, 900) == 900  # the default never exceeds the role's maximum
    assert rules.session_duration(900, 3600) == 900 and rules.session_duration(7200, 7200) == 7200
    with pytest.raises(errors.IamValidation, match="greater than or equal to 900"):
        rules.session_duration(899, 3600)
    with pytest.raises(errors.IamValidation, match=r"MaxSessionDuration set for this role \(3600\)"):
        rules.session_duration(3601, 3600)
    assert rules.check_max_session(None) == 3600 and rules.check_max_session(43200) == 43200
    for bad in (899, 43201):
        with pytest.raises(errors.IamValidation):
            rules.check_max_session(bad)


def test_access_key_status() -> None:
    assert rules.check_access_key_status("Inactive") == "Inactive"
    with pytest.raises(errors.IamValidation, match=r"\[Active, Inactive\]"):
        rules.check_access_key_status("inactive")


def test_arns_and_ids() -> None:
    assert rules.user_arn(ACCT, "alice") == f"arn:aws:iam::{ACCT}:user/alice"
    assert rules.role_arn(ACCT, "app", "/svc/") == f"arn:aws:iam::{ACCT}:role/svc/app"
    assert rules.session_arn(ACCT, "app", "s1") == f"arn:aws:sts::{ACCT}:assumed-role/app/s1"
    uid = rules.new_unique_id("AIDA")
    assert uid.startswith("AIDA") and len(uid) == 21 and uid.isalnum() and uid.isupper()
    account = rules.new_account_id()
    assert len(account) == 12 and account.isdigit() and account != "000000000000"
    assert rules.parse_role_arn(f"arn:aws:iam::{ACCT}:role/path/app") == rules.RoleRef(
        ACCT, "app", f"arn:aws:iam::{ACCT}:role/path/app"
    )
    for bad in (
        "app",
        f"arn:aws:iam::{ACCT}:user/app",
        "arn:aws:iam::12:role/app",
        f"arn:aws:s3::{ACCT}:role/x",
    ):
        with pytest.raises(errors.IamValidation):
            rules.parse_role_arn(bad)


def test_identity_policies_need_the_current_version_and_no_principal() -> None:
    good = json.dumps(
        {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}
    )
    assert rules.identity_policy(good, "p", max_size=2048).name == "p"
    with pytest.raises(MalformedPolicy) as exc:
        rules.identity_policy(good.replace("2012", "2008"), "p", max_size=2048)
    assert exc.value.code == "MalformedPolicyDocument"
    assert exc.value.message == "Policy document must be version 2012-10-17 or greater."
    with pytest.raises(errors.IamLimitExceeded):
        rules.identity_policy(good, "p", max_size=10)
    assert rules.iam_size(' { "a" : 1 }\n') == 7


def test_trust_policies_are_resource_policies_without_resource() -> None:
    policy = rules.trust_policy(trust({"AWS": ACCT}))
    assert policy.kind is PolicyKind.TRUST
    with pytest.raises(MalformedPolicy) as exc:
        rules.trust_policy(
            json.dumps(
                {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:*", "Resource": "*"}]}
            )
        )
    assert (
        exc.value.code == "MalformedPolicyDocument" and exc.value.message == "Has prohibited field Resource"
    )
    with pytest.raises(MalformedPolicy) as exc:
        rules.trust_policy(json.dumps({"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}))
    assert exc.value.code == "MalformedPolicyDocument"
    with pytest.raises(MalformedPolicy):
        rules.trust_policy(trust({"AWS": "arn:aws:iam::*:root"}))  # no wildcards inside a principal
    with pytest.raises(errors.IamValidation):
        rules.trust_policy("")


def test_trust_naming_the_user_suffices_in_one_account() -> None:
    rules.may_assume(
        user("alice"), ROLE, rules.trust_policy(trust({"AWS": f"arn:aws:iam::{ACCT}:user/alice"}))
    )


def test_trust_naming_the_account_delegates_to_identity_policies() -> None:
    account_trust = rules.trust_policy(trust({"AWS": ACCT}))
    rules.may_assume(user("alice", policies=(ALLOW_ASSUME,)), ROLE, account_trust)
    with pytest.raises(errors.AccessDenied) as exc:
        rules.may_assume(user("alice"), ROLE, account_trust)
    assert exc.value.message == (
        f"User: arn:aws:iam::{ACCT}:user/alice is not authorized to perform: sts:AssumeRole "
        f"on resource: {ROLE.arn}"
    )


def test_identity_allow_without_trust_is_refused() -> None:
    other = rules.trust_policy(trust({"AWS": f"arn:aws:iam::{ACCT}:user/bob"}))
    with pytest.raises(errors.AccessDenied):
        rules.may_assume(user("alice", policies=(admin_policy(),)), ROLE, other)


def test_trust_deny_wins() -> None:
    doc = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": ACCT}, "Action": "sts:AssumeRole"},
                {
                    "Effect": "Deny",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCT}:user/alice"},
                    "Action": "sts:*",
                },
            ],
        }
    )
    with pytest.raises(errors.AccessDenied):
        rules.may_assume(user("alice", policies=(admin_policy(),)), ROLE, rules.trust_policy(doc))


def test_across_accounts_both_sides_must_allow() -> None:
    trusts_other = rules.trust_policy(trust({"AWS": OTHER}))
    outsider_allowed = user("eve", OTHER, policies=(ALLOW_ASSUME,))
    rules.may_assume(outsider_allowed, ROLE, trusts_other)
    with pytest.raises(errors.AccessDenied):
        rules.may_assume(user("eve", OTHER), ROLE, trusts_other)  # no identity allow
    with pytest.raises(errors.AccessDenied):
        rules.may_assume(outsider_allowed, ROLE, rules.trust_policy(trust({"AWS": ACCT})))  # not trusted


def test_markers_round_trip_and_refuse_garbage() -> None:
    assert decode_marker(encode_marker("bob")) == "bob"
    assert decode_marker(None) is None and decode_marker("") is None
    with pytest.raises(errors.IamValidation, match="Invalid Marker"):
        decode_marker("!!!")


def test_notify_payload() -> None:
    assert json.loads(notify_payload(["AKIAB", "AKIAA", "AKIAB"], ["arn:x"])) == {
        "access_key_ids": ["AKIAA", "AKIAB"],
        "principal_arns": ["arn:x"],
    }
    huge = notify_payload([f"AKIA{i:016d}" for i in range(1000)])
    assert len(huge) < MAX_NOTIFY_BYTES and json.loads(huge)["reset"] is True
