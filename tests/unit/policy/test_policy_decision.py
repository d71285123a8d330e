"""The wildcard matcher, resource and principal matching, the decision order (explicit deny, same account,
cross account with the KMS key rule, root), NotPrincipal, BlockPublicPolicy's broad-access check,
ValidateResourcePolicy and the compile cache."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from coffer.core.errors import CofferError
from coffer.core.policy import (
    Glob,
    KeyAccess,
    MalformedPolicy,
    PolicyCache,
    PolicyKind,
    Reason,
    RequestContext,
    check_resource_policy_for_put,
    evaluate,
    grants_broad_access,
    named_principals,
    parse_policy,
    validate_resource_policy,
)

ACCT = "111122223333"
OTHER = "444455556666"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
BOB = f"arn:aws:iam::{OTHER}:user/bob"
APP_ROLE = f"arn:aws:iam::{OTHER}:role/app"
APP_SESSION = f"arn:aws:sts::{OTHER}:assumed-role/app/s1"
P = f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/db-AbCdEf"
GSV = "secretsmanager:GetSecretValue"


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def stmt(effect: str = "Allow", action: Any = GSV, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource, **extra}


# --- the wildcard matcher ----------------------------------------------------------------------------------

GLOBS: list[tuple[str, str, bool, bool]] = [
    ("*", "", False, True),
    ("*", "anything at all", False, True),
    ("", "", False, True),
    ("", "a", False, False),
    ("abc", "abc", False, True),
    ("abc", "abd", False, False),
    ("a*", "a", False, True),
    ("*c", "abc", False, True),
    ("*c", "abcd", False, False),
    ("a*c", "ac", False, True),
    ("a*b*c", "aXbYc", False, True),
    ("a*b*c", "aXcYb", False, False),
    ("a*a*a*a*b", "a" * 200, False, False),
    ("?", "", False, False),
    ("??", "ab", False, True),
    ("a?c*", "abcdef", False, True),
    ("*x?z*", "wwxyzww", False, True),
    ("*x?z", "xaz-xbz", False, True),
    ("ab*ba", "aba", False, False),
    ("secretsmanager:get*", "SecretsManager:GetSecretValue", True, True),
    ("SecretsManager:List*", "secretsmanager:listsecretversionids", True, True),
    ("Secret", "secret", False, False),
    ("[a]", "a", False, False),
]


@pytest.mark.parametrize(("pattern", "text", "fold", "expected"), GLOBS)
def test_glob(pattern: str, text: str, fold: bool, expected: bool) -> None:
    assert Glob.parse(pattern, fold=fold).match(text) is expected


def test_glob_literal_tokens_do_not_act_as_wildcards() -> None:
    assert not Glob.literal("a*").match("abc")
    assert Glob.literal("a*").match("a*")


# --- resource matching -------------------------------------------------------------------------------------

RESOURCES: list[tuple[str, str, bool]] = [
    ("*", P, True),
    ("*", "*", True),
    (f"arn:aws:secretsmanager:*:{ACCT}:secret:*", P, True),
    (f"arn:aws:secretsmanager:*:{ACCT}:secret:*", "*", False),
    (f"arn:aws:secretsmanager:*:{OTHER}:secret:*", P, False),
    ("arn:aws:secretsmanager:us-*:*:secret:prod/*", P, True),
    ("arn:aws:secretsmanager:*:*:*", P, True),  # the last part's star crosses ':' and '/'
    ("arn:aws:secretsmanager:*:*:secret:prod/db-AbCdEf", P, True),
    ("arn:aws:secretsmanager:*:*:secret:prod/db-abcdef", P, False),
    (
        "arn:aws:secretsmanager:*:*:secret:prod/db-*",
        f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/db-old-XyZ123",
        True,
    ),
    ("arn:*:secretsmanager:*:*:secret:*", P, True),
    ("arn:aws:kms:*:*:key/*", P, False),
    (
        "arn:aws:secretsmanager:*:*:secret:${aws:username}/*",
        f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:alice/x-AbCdEf",
        True,
    ),
    ("arn:aws:secretsmanager:*:*:secret:${aws:username}/*", P, False),
    ("arn:aws:secretsmanager:*:*:secret:${aws:PrincipalTag/none}*", P, False),
    ("arn:aws:secretsmanager:*:*:secret:${aws:PrincipalTag/none, 'prod'}/*", P, True),
]


@pytest.mark.parametrize(("pattern", "resource", "expected"), RESOURCES)
def test_resource_matching(pattern: str, resource: str, expected: bool) -> None:
    ctx = RequestContext(principal_arn=ALICE, principal_account=ACCT, action=GSV, resource=resource)
    d = evaluate(ctx, [parse_policy(doc(stmt(resource=pattern)))])
    assert d.allowed is expected


# --- principals and accounts ---

# (id, resource-policy Principal, caller ARN, caller account, identity allow?, expected reason)
PRINCIPALS: list[tuple[str, Any, str, str, bool, Reason]] = [
    ("same-account-user-direct", {"AWS": ALICE}, ALICE, ACCT, False, Reason.ALLOW_RESOURCE),
    (
        "same-account-root-arn-delegates",
        {"AWS": f"arn:aws:iam::{ACCT}:root"},
        ALICE,
        ACCT,
        False,
        Reason.NO_IDENTITY_ALLOW,
    ),
    (
        "same-account-root-arn-plus-identity",
        {"AWS": f"arn:aws:iam::{ACCT}:root"},
        ALICE,
        ACCT,
        True,
        Reason.ALLOW_IDENTITY,
    ),
    (
        "other-user-named-not-me",
        {"AWS": f"arn:aws:iam::{ACCT}:user/carol"},
        ALICE,
        ACCT,
        False,
        Reason.NO_IDENTITY_ALLOW,
    ),
    ("cross-account-user-needs-identity", {"AWS": BOB}, BOB, OTHER, False, Reason.NO_IDENTITY_ALLOW),
    ("cross-account-user-both", {"AWS": BOB}, BOB, OTHER, True, Reason.ALLOW_CROSS_ACCOUNT),
    ("cross-account-account-principal-both", {"AWS": OTHER}, BOB, OTHER, True, Reason.ALLOW_CROSS_ACCOUNT),
    (
        "cross-account-identity-only",
        {"AWS": f"arn:aws:iam::{ACCT}:user/carol"},
        BOB,
        OTHER,
        True,
        Reason.NO_RESOURCE_ALLOW,
    ),
    (
        "cross-account-role-covers-sessions",
        {"AWS": APP_ROLE},
        APP_SESSION,
        OTHER,
        True,
        Reason.ALLOW_CROSS_ACCOUNT,
    ),
    (
        "cross-account-session-exact",
        {"AWS": APP_SESSION},
        APP_SESSION,
        OTHER,
        True,
        Reason.ALLOW_CROSS_ACCOUNT,
    ),
    (
        "cross-account-other-session",
        {"AWS": APP_SESSION},
        f"arn:aws:sts::{OTHER}:assumed-role/app/s2",
        OTHER,
        True,
        Reason.NO_RESOURCE_ALLOW,
    ),
    ("cross-account-star", "*", BOB, OTHER, True, Reason.ALLOW_CROSS_ACCOUNT),
    (
        "same-account-session-via-role",
        {"AWS": f"arn:aws:iam::{ACCT}:role/app"},
        f"arn:aws:sts::{ACCT}:assumed-role/app/x",
        ACCT,
        False,
        Reason.ALLOW_RESOURCE,
    ),
    (
        "root-of-account-allowed-without-policy",
        {"AWS": f"arn:aws:iam::{ACCT}:user/carol"},
        f"arn:aws:iam::{ACCT}:root",
        ACCT,
        False,
        Reason.ALLOW_ROOT,
    ),
    (
        "cross-account-root-with-resource-allow",
        {"AWS": OTHER},
        f"arn:aws:iam::{OTHER}:root",
        OTHER,
        False,
        Reason.ALLOW_CROSS_ACCOUNT,
    ),
]


@pytest.mark.parametrize(
    ("principal", "caller", "account", "identity_allow", "reason"),
    [p[1:] for p in PRINCIPALS],
    ids=[p[0] for p in PRINCIPALS],
)
def test_principals(principal: Any, caller: str, account: str, identity_allow: bool, reason: Reason) -> None:
    ctx = RequestContext(
        principal_arn=caller, principal_account=account, action=GSV, resource=P, resource_account=ACCT
    )
    ids = [parse_policy(doc(stmt()))] if identity_allow else []
    res = parse_policy(doc(stmt(Principal=principal)), PolicyKind.RESOURCE)
    d = evaluate(ctx, ids, res)
    assert d.reason is reason
    assert d.allowed is reason.value.startswith(("Allow", "Root"))


def test_cross_account_message_names_the_resource_policy() -> None:
    ctx = RequestContext(
        principal_arn=BOB, principal_account=OTHER, action=GSV, resource=P, resource_account=ACCT
    )
    d = evaluate(ctx, [parse_policy(doc(stmt()))], None)
    assert d.message == (
        f"User: {BOB} is not authorized to perform: {GSV} on resource: {P} "
        f"because no resource-based policy allows the {GSV} action"
    )


KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize(
    ("key", "reason", "message"),
    [
        (None, Reason.ALLOW_CROSS_ACCOUNT, ""),
        (KeyAccess(customer_managed=True, key_policy_allows_account=True), Reason.ALLOW_CROSS_ACCOUNT, ""),
        (
            KeyAccess(customer_managed=False, key_policy_allows_account=True),
            Reason.KMS_DEFAULT_KEY,
            "Access to KMS is not allowed",
        ),
        (
            KeyAccess(customer_managed=True, key_policy_allows_account=False, key_arn=KEY),
            Reason.KMS_KEY_POLICY,
            f"User: {BOB} is not authorized to perform: kms:Decrypt on resource: {KEY} "
            "because no resource-based policy allows the kms:Decrypt action",
        ),
    ],
    ids=["no-key-use", "customer-managed-allowed", "default-key-refused", "key-policy-refuses"],
)
def test_cross_account_kms_rule(key: KeyAccess | None, reason: Reason, message: str) -> None:
    ctx = RequestContext(
        principal_arn=BOB, principal_account=OTHER, action=GSV, resource=P, resource_account=ACCT
    )
    res = parse_policy(doc(stmt(Principal={"AWS": BOB})), PolicyKind.RESOURCE)
    d = evaluate(ctx, [parse_policy(doc(stmt()))], res, key=key)
    assert (d.reason, d.message) == (reason, message)


def test_kms_rule_does_not_apply_in_the_same_account() -> None:
    ctx = RequestContext(
        principal_arn=ALICE, principal_account=ACCT, action=GSV, resource=P, resource_account=ACCT
    )
    key = KeyAccess(customer_managed=False, key_policy_allows_account=False)
    assert evaluate(ctx, [parse_policy(doc(stmt()))], key=key).allowed


def test_explicit_deny_beats_root_and_cross_account_allows() -> None:
    root = f"arn:aws:iam::{ACCT}:root"
    ctx = RequestContext(
        principal_arn=root, principal_account=ACCT, action=GSV, resource=P, resource_account=ACCT
    )
    res = parse_policy(doc(stmt("Deny", Principal="*")), PolicyKind.RESOURCE)
    d = evaluate(ctx, [], res)
    assert d.reason is Reason.EXPLICIT_DENY_RESOURCE
    assert [(c.source, c.statement) for c in d.statements] == [("resource", 0)]


def test_identity_deny_reported_before_resource_deny() -> None:
    ctx = RequestContext(
        principal_arn=ALICE, principal_account=ACCT, action=GSV, resource=P, resource_account=ACCT
    )
    res = parse_policy(doc(stmt("Deny", Principal="*")), PolicyKind.RESOURCE)
    d = evaluate(ctx, [parse_policy(doc(stmt("Deny", Sid="NoReads")), name="p1")], res)
    assert d.reason is Reason.EXPLICIT_DENY_IDENTITY
    assert [(c.source, c.policy_name, c.sid) for c in d.statements] == [
        ("identity", "p1", "NoReads"),
        ("resource", "", None),
    ]


def test_service_principal() -> None:
    ctx = RequestContext(
        principal_arn="rotation.coffer",
        principal_account=ACCT,
        action=GSV,
        resource=P,
        service="rotation.coffer",
    )
    res = parse_policy(doc(stmt(Principal={"Service": "rotation.coffer"})), PolicyKind.RESOURCE)
    assert evaluate(ctx, [], res).reason is Reason.ALLOW_RESOURCE
    other = parse_policy(doc(stmt(Principal={"Service": "other.coffer"})), PolicyKind.RESOURCE)
    assert not evaluate(ctx, [], other).allowed


# NotPrincipal with Deny: (id, NotPrincipal list, caller, denied?)
NOT_PRINCIPAL: list[tuple[str, list[str], str, bool]] = [
    ("user-and-account-escape", [ALICE, f"arn:aws:iam::{ACCT}:root"], ALICE, False),
    ("user-only-still-denied", [ALICE], ALICE, True),
    ("others-denied", [ALICE, f"arn:aws:iam::{ACCT}:root"], f"arn:aws:iam::{ACCT}:user/carol", True),
    (
        "session-role-account-escape",
        [f"arn:aws:sts::{ACCT}:assumed-role/app/s1", f"arn:aws:iam::{ACCT}:role/app", ACCT],
        f"arn:aws:sts::{ACCT}:assumed-role/app/s1",
        False,
    ),
    (
        "role-and-account-only-session-denied",
        [f"arn:aws:iam::{ACCT}:role/app", ACCT],
        f"arn:aws:sts::{ACCT}:assumed-role/app/s1",
        True,
    ),
]


@pytest.mark.parametrize(
    ("names", "caller", "denied"), [n[1:] for n in NOT_PRINCIPAL], ids=[n[0] for n in NOT_PRINCIPAL]
)
def test_not_principal(names: list[str], caller: str, denied: bool) -> None:
    ctx = RequestContext(
        principal_arn=caller, principal_account=ACCT, action=GSV, resource=P, resource_account=ACCT
    )
    res = parse_policy(doc(stmt("Deny", NotPrincipal={"AWS": names})), PolicyKind.RESOURCE)
    d = evaluate(ctx, [parse_policy(doc(stmt()))], res)
    assert (d.reason is Reason.EXPLICIT_DENY_RESOURCE) is denied


def test_adding_a_deny_never_allows_and_order_never_matters() -> None:
    statements = [
        stmt(),
        stmt("Deny", Condition={"StringEquals": {"coffer:k": "x"}}),
        stmt(action="secretsmanager:*", resource=f"arn:aws:secretsmanager:*:{ACCT}:secret:prod/*"),
        stmt("Deny", action="secretsmanager:Put*"),
    ]
    for keys in ({}, {"coffer:k": ["x"]}):
        ctx = RequestContext(principal_arn=ALICE, principal_account=ACCT, action=GSV, resource=P, keys=keys)
        outcomes = {
            (d.allowed, d.reason)
            for perm in itertools.permutations(statements)
            for d in [evaluate(ctx, [parse_policy(doc(*perm))])]
        }
        assert len(outcomes) == 1
        base = evaluate(ctx, [parse_policy(doc(*statements[:1]))])
        more = evaluate(ctx, [parse_policy(doc(*statements))])
        assert more.allowed <= base.allowed


# --- broad access (BlockPublicPolicy) ----------------------------------------------------------------------

BROAD: list[tuple[str, dict[str, Any], bool]] = [
    ("star-no-condition", stmt(Principal="*"), True),
    ("aws-star-no-condition", stmt(Principal={"AWS": "*"}), True),
    ("star-in-list", stmt(Principal={"AWS": [ALICE, "*"]}), True),
    ("named-account", stmt(Principal={"AWS": OTHER}), False),
    ("named-user", stmt(Principal={"AWS": BOB}), False),
    ("service", stmt(Principal={"Service": "rotation.coffer"}), False),
    ("deny-star", stmt("Deny", Principal="*"), False),
    (
        "star-principal-account",
        stmt(Principal="*", Condition={"StringEquals": {"aws:PrincipalAccount": ACCT}}),
        False,
    ),
    (
        "star-principal-account-wildcard",
        stmt(Principal="*", Condition={"StringLike": {"aws:PrincipalAccount": "1111*"}}),
        True,
    ),
    (
        "star-principalarn-fixed-account",
        stmt(Principal="*", Condition={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCT}:role/app-*"}}),
        False,
    ),
    (
        "star-principalarn-any-account",
        stmt(Principal="*", Condition={"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/app"}}),
        True,
    ),
    ("star-sourceip", stmt(Principal="*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}), False),
    (
        "star-sourceip-slash-zero",
        stmt(Principal="*", Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}),
        True,
    ),
    (
        "star-negated-operator",
        stmt(Principal="*", Condition={"StringNotEquals": {"aws:PrincipalAccount": OTHER}}),
        True,
    ),
    (
        "star-ifexists",
        stmt(Principal="*", Condition={"StringEqualsIfExists": {"aws:PrincipalAccount": ACCT}}),
        True,
    ),
    (
        "star-unrelated-key",
        stmt(Principal="*", Condition={"StringEquals": {"aws:ResourceTag/team": "a"}}),
        True,
    ),
    (
        "star-orgid",
        stmt(Principal="*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}),
        False,
    ),
    (
        "star-orgid-wildcard",
        stmt(Principal="*", Condition={"StringLike": {"aws:PrincipalOrgID": "o-*"}}),
        True,
    ),
    (
        "star-userid-role-prefix",
        stmt(Principal="*", Condition={"StringLike": {"aws:userid": "AROAEXAMPLE:*"}}),
        False,
    ),
    ("star-userid-wildcard", stmt(Principal="*", Condition={"StringLike": {"aws:userid": "*"}}), True),
    (
        "star-forany-orgpaths",
        stmt(Principal="*", Condition={"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-abc/r-1/*"}}),
        False,
    ),
    (
        "star-forall-orgpaths",
        stmt(Principal="*", Condition={"ForAllValues:StringLike": {"aws:PrincipalOrgPaths": "o-abc/*"}}),
        True,
    ),
    (
        "star-variable-value",
        stmt(Principal="*", Condition={"StringEquals": {"aws:PrincipalAccount": "${aws:ResourceAccount}"}}),
        True,
    ),
]


@pytest.mark.parametrize(("statement", "broad"), [b[1:] for b in BROAD], ids=[b[0] for b in BROAD])
def test_broad_access(statement: dict[str, Any], broad: bool) -> None:
    assert grants_broad_access(parse_policy(doc(statement), PolicyKind.RESOURCE)) is broad


# --- ValidateResourcePolicy --------------------------------------------------------------------------------


def test_validate_passes_a_narrow_policy() -> None:
    r = validate_resource_policy(doc(stmt(Principal={"AWS": OTHER})))
    assert (r.passed, r.errors) == (True, ())


def test_validate_reports_syntax() -> None:
    r = validate_resource_policy(doc(stmt()))  # no principal
    assert not r.passed
    assert [e.check_name for e in r.errors] == ["SYNTAX"]


def test_validate_unparseable_json_raises() -> None:
    with pytest.raises(MalformedPolicy) as ei:
        validate_resource_policy("{not json")
    assert ei.value.message == "This policy has invalid syntax."


def test_validate_reports_broad_access_with_statement_and_sid() -> None:
    r = validate_resource_policy(doc(stmt(Principal={"AWS": OTHER}), stmt(Principal="*", Sid="Everyone")))
    assert [(e.check_name, e.error_message) for e in r.errors] == [
        ("BROAD_ACCESS", "The policy grants broad access in statement 1 (Sid Everyone).")
    ]


def test_validate_reports_lockout_for_the_caller() -> None:
    text = doc(stmt("Deny", action="secretsmanager:*ResourcePolicy", Principal={"AWS": ALICE}))
    r = validate_resource_policy(text, caller_arn=ALICE, secret_arn=P)
    assert [e.check_name for e in r.errors] == ["LOCKOUT"]
    assert validate_resource_policy(text, caller_arn=f"arn:aws:iam::{ACCT}:user/carol", secret_arn=P).passed


def test_validate_reports_lockout_of_everyone_without_secret() -> None:
    r = validate_resource_policy(doc(stmt("Deny", action="secretsmanager:PutResourcePolicy", Principal="*")))
    assert [e.check_name for e in r.errors] == ["LOCKOUT"]


# --- compile once, evaluate fast ----------------------------------------------------------------------------


def test_cache_parses_once_and_keeps_names_apart() -> None:
    cache = PolicyCache(capacity=2)
    text = doc(stmt())
    a = cache.get(text, name="p1")
    assert cache.get(text, name="p1") is a
    assert cache.get(text, name="p2") is not a
    cache.get(doc(stmt("Deny")), name="p3")
    assert len(cache) == 2
    with pytest.raises(MalformedPolicy):
        cache.get("[]")


TYPICAL = doc(
    stmt(
        action=[GSV, "secretsmanager:DescribeSecret"],
        resource=f"arn:aws:secretsmanager:*:{ACCT}:secret:*",
        Condition={"StringEquals": {"secretsmanager:ResourceTag/team": "${aws:PrincipalTag/team}"}},
    ),
    stmt("Deny", action="secretsmanager:*", Condition={"Bool": {"aws:SecureTransport": "false"}}),
    stmt(action="secretsmanager:List*"),
)


def test_typical_policy_is_compiled_once_and_evaluated_from_the_cache() -> None:
    cache = PolicyCache()
    policy = cache.get(TYPICAL)
    assert cache.get(TYPICAL) is policy  # parsed once; its cost is measured by bench/policy_bench.py
    ctx = RequestContext(
        principal_arn=ALICE,
        principal_account=ACCT,
        action=GSV,
        resource=P,
        resource_account=ACCT,
        principal_tags={"team": "payments"},
        keys={"secretsmanager:ResourceTag/team": ["payments"], "aws:SecureTransport": ["true"]},
    )
    assert evaluate(ctx, [policy]).reason is Reason.ALLOW_IDENTITY


# --- PutResourcePolicy's pipeline -----

PUT: list[tuple[str, str, bool, str | None, str | None]] = [
    ("narrow-policy-stored", doc(stmt(Principal={"AWS": OTHER})), True, None, None),
    ("empty-text-validation", "", False, "ValidationException", "greater than or equal to 1"),
    ("too-long-validation", " " * 20481, False, "ValidationException", "less than or equal to 20480"),
    (
        "bad-grammar",
        doc(stmt()),
        False,
        "MalformedPolicyDocumentException",
        "This policy has invalid syntax.",
    ),
    (
        "bad-principal",
        doc(stmt(Principal={"AWS": "arn:aws:iam::*:root"})),
        True,
        "MalformedPolicyDocumentException",
        "This resource policy contains an unsupported principal",
    ),
    (
        "public-refused-with-block",
        doc(stmt(Principal="*")),
        True,
        "PublicPolicyException",
        "BlockPublicPolicy",
    ),
    (
        "public-accepted-without-block",
        doc(stmt(Principal={"AWS": "*"}, action="secretsmanager:*")),
        False,
        None,
        None,
    ),
]


@pytest.mark.parametrize(("text", "block", "code", "message"), [p[1:] for p in PUT], ids=[p[0] for p in PUT])
def test_put_pipeline(text: str, block: bool, code: str | None, message: str | None) -> None:
    if code is None:
        assert check_resource_policy_for_put(text, block_public_policy=block).statements
        return
    with pytest.raises(CofferError) as ei:
        check_resource_policy_for_put(text, block_public_policy=block)
    assert ei.value.code == code
    assert message is not None and message in ei.value.message


def test_named_principals_for_the_existence_check() -> None:
    policy = parse_policy(
        doc(
            stmt(Principal={"AWS": [ALICE, OTHER, APP_ROLE, "*"]}),
            stmt("Deny", Principal={"AWS": [ALICE, APP_SESSION], "Service": "rotation.coffer"}),
        ),
        PolicyKind.RESOURCE,
    )
    assert named_principals(policy) == [ALICE, APP_ROLE, APP_SESSION]
