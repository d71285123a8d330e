"""Every conformance case of the policy rules (same account, caller alice unless noted) and the ABAC patterns,
table-driven: policies, request, expected decision, reason and (where AWS's text is known) message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coffer.core.policy import (
    Decision,
    PolicyKind,
    PublicPolicy,
    Reason,
    RequestContext,
    evaluate,
    grants_broad_access,
    parse_policy,
)

ACCT = "111122223333"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
P = f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/db-AbCdEf"
DEV = f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:dev/x-AbCdEf"
S = f"arn:aws:secretsmanager:*:{ACCT}:secret:*"
GSV = "secretsmanager:GetSecretValue"
V12 = "2012-10-17"


def doc(*statements: dict[str, Any], version: str | None = V12) -> str:
    d: dict[str, Any] = {"Statement": list(statements)}
    if version is not None:
        d["Version"] = version
    return json.dumps(d)


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def decide(
    identity: list[str] | None = None,
    resource: str | None = None,
    *,
    action: str = GSV,
    target: str = P,
    principal: str = ALICE,
    tags: dict[str, str] | None = None,
    keys: dict[str, list[str]] | None = None,
) -> Decision:
    ctx = RequestContext(
        principal_arn=principal,
        principal_account=ACCT,
        action=action,
        resource=target,
        resource_account=None if target == "*" else ACCT,
        principal_tags=tags or {},
        keys=keys or {},
    )
    ids = [parse_policy(t, PolicyKind.IDENTITY) for t in identity or []]
    res = parse_policy(resource, PolicyKind.RESOURCE) if resource is not None else None
    return evaluate(ctx, ids, res)


def msg(tail: str, *, action: str = GSV, target: str | None = P, who: str = ALICE) -> str:
    on = f" on resource: {target}" if target is not None else ""
    return f"User: {who} is not authorized to perform: {action}{on} {tail}"


NO_ID = msg(f"because no identity-based policy allows the {GSV} action")

ABAC_A = allow(
    [GSV, "secretsmanager:DescribeSecret"],
    S,
    Condition={"StringEquals": {"secretsmanager:ResourceTag/team": "${aws:PrincipalTag/team}"}},
)
ABAC_C = allow(
    ["secretsmanager:CreateSecret", "secretsmanager:TagResource"],
    S,
    Condition={
        "StringEquals": {"aws:RequestTag/team": "${aws:PrincipalTag/team}"},
        "ForAllValues:StringEquals": {"aws:TagKeys": ["team", "env"]},
    },
)
ABAC_B = deny(
    ["secretsmanager:TagResource", "secretsmanager:UntagResource"],
    "*",
    Condition={"ForAnyValue:StringEqualsIgnoreCase": {"aws:TagKeys": ["owner"]}},
)
ABAC_B2 = deny(
    "secretsmanager:TagResource",
    "*",
    Condition={
        "Null": {"aws:RequestTag/team": "false"},
        "StringNotEquals": {"aws:RequestTag/team": "${aws:PrincipalTag/team}"},
    },
)
NEW = f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:new/app-QwErTy"
ALLOW_ALL = doc(allow("secretsmanager:*"))

# (case id, decide(...) keyword arguments, allowed, reason, message or None)
CASES: list[tuple[str, dict[str, Any], bool, Reason, str | None]] = [
    ("1-no-policies-default-deny", {}, False, Reason.NO_IDENTITY_ALLOW, NO_ID),
    (
        "2-explicit-deny-in-resource-policy-wins",
        {"identity": [doc(allow(GSV))], "resource": doc(deny(GSV, Principal="*"))},
        False,
        Reason.EXPLICIT_DENY_RESOURCE,
        msg("with an explicit deny in a resource-based policy"),
    ),
    (
        "3-resource-policy-naming-alice-suffices",
        {"resource": doc(allow(GSV, Principal={"AWS": ALICE}))},
        True,
        Reason.ALLOW_RESOURCE,
        None,
    ),
    (
        "4-account-principal-only-delegates",
        {"resource": doc(allow(GSV, Principal={"AWS": ACCT}))},
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "4b-account-principal-plus-identity-allow",
        {"identity": [doc(allow(GSV))], "resource": doc(allow(GSV, Principal={"AWS": ACCT}))},
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "5-wildcard-principal-grants-directly",
        {"resource": doc(allow(GSV, Principal="*"))},
        True,
        Reason.ALLOW_RESOURCE,
        None,
    ),
    (
        "6-action-names-case-insensitive",
        {"identity": [doc(allow("SecretsManager:getsecretvalue"))]},
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "7-resources-case-sensitive",
        {"identity": [doc(allow(GSV, f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:Prod/db-*"))]},
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "8a-name-without-suffix-matches-nothing",
        {"identity": [doc(allow(GSV, f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/db"))]},
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "8b-six-question-marks-match-the-suffix",
        {"identity": [doc(allow(GSV, f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/db-??????"))]},
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "9-allow-notaction-grants-every-other-action",
        {
            "identity": [
                doc({"Effect": "Allow", "NotAction": "secretsmanager:DeleteSecret", "Resource": "*"})
            ],
            "action": "secretsmanager:PutResourcePolicy",
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "10a-deny-notaction-denies-all-but-the-list",
        {
            "identity": [
                doc(
                    allow("secretsmanager:*"),
                    {"Effect": "Deny", "NotAction": "secretsmanager:Describe*", "Resource": "*"},
                )
            ]
        },
        False,
        Reason.EXPLICIT_DENY_IDENTITY,
        msg("with an explicit deny in an identity-based policy"),
    ),
    (
        "10b-deny-notaction-spares-the-listed-action",
        {
            "identity": [
                doc(
                    allow("secretsmanager:*"),
                    {"Effect": "Deny", "NotAction": "secretsmanager:Describe*", "Resource": "*"},
                )
            ],
            "action": "secretsmanager:DescribeSecret",
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "11a-notresource-covers-unlisted-resource",
        {
            "identity": [
                doc(
                    {
                        "Effect": "Allow",
                        "Action": GSV,
                        "NotResource": f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/*",
                    }
                )
            ],
            "target": DEV,
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "11b-notresource-excludes-listed-resource",
        {
            "identity": [
                doc(
                    {
                        "Effect": "Allow",
                        "Action": GSV,
                        "NotResource": f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/*",
                    }
                )
            ]
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "12a-key-name-folded-value-case-sensitive",
        {
            "identity": [doc(allow(GSV, Condition={"StringEquals": {"aws:ResourceTag/Team": "payments"}}))],
            "keys": {"aws:ResourceTag/team": ["Payments"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "12b-ignorecase-operator-matches",
        {
            "identity": [
                doc(allow(GSV, Condition={"StringEqualsIgnoreCase": {"aws:ResourceTag/Team": "payments"}}))
            ],
            "keys": {"aws:ResourceTag/team": ["Payments"]},
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "13-forallvalues-true-on-absent-set",
        {
            "identity": [
                doc(
                    allow(
                        "secretsmanager:CreateSecret",
                        Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]}},
                    )
                )
            ],
            "action": "secretsmanager:CreateSecret",
            "target": NEW,
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "14-foranyvalue-false-on-absent-set",
        {
            "identity": [
                doc(
                    allow(
                        "secretsmanager:CreateSecret",
                        Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["env"]}},
                    )
                )
            ],
            "action": "secretsmanager:CreateSecret",
            "target": NEW,
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        msg(
            "because no identity-based policy allows the secretsmanager:CreateSecret action",
            action="secretsmanager:CreateSecret",
            target=NEW,
        ),
    ),
    (
        "15-set-qualifier-on-single-valued-key-absent-passes",
        {
            "identity": [
                doc(allow(GSV, Condition={"ForAllValues:StringEquals": {"aws:ResourceTag/team": ["a"]}}))
            ]
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "16a-missing-key-fails-positive-operator",
        {
            "identity": [
                doc(allow(GSV, Condition={"StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}))
            ]
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "16b-ifexists-passes-missing-key",
        {
            "identity": [
                doc(
                    allow(
                        GSV, Condition={"StringEqualsIfExists": {"secretsmanager:VersionStage": "AWSCURRENT"}}
                    )
                )
            ]
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "17-negated-operator-true-on-missing-key",
        {
            "identity": [
                doc(
                    allow(GSV),
                    deny(GSV, Condition={"StringNotEquals": {"aws:PrincipalTag/team": "payments"}}),
                )
            ]
        },
        False,
        Reason.EXPLICIT_DENY_IDENTITY,
        msg("with an explicit deny in an identity-based policy"),
    ),
    (
        "18a-bool-false-never-fires-on-absent-key",
        {
            "identity": [
                doc(allow("*"), deny("*", Condition={"Bool": {"aws:MultiFactorAuthPresent": "false"}}))
            ]
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "18b-boolifexists-fires-on-absent-key",
        {
            "identity": [
                doc(
                    allow("*"), deny("*", Condition={"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}})
                )
            ]
        },
        False,
        Reason.EXPLICIT_DENY_IDENTITY,
        msg("with an explicit deny in an identity-based policy"),
    ),
    (
        "19a-abac-same-team-allowed",
        {
            "identity": [doc(ABAC_A)],
            "tags": {"team": "payments"},
            "keys": {"secretsmanager:ResourceTag/team": ["payments"]},
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "19b-abac-other-team-denied",
        {
            "identity": [doc(ABAC_A)],
            "tags": {"team": "payments"},
            "keys": {"secretsmanager:ResourceTag/team": ["hr"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "19c-abac-untagged-secret-denied",
        {"identity": [doc(ABAC_A)], "tags": {"team": "payments"}},
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "20-variables-literal-under-2008",
        {
            "identity": [doc(ABAC_A, version="2008-10-17")],
            "tags": {"team": "payments"},
            "keys": {"secretsmanager:ResourceTag/team": ["payments"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "21a-values-or-keys-and-allowed",
        {
            "identity": [
                doc(
                    allow(
                        GSV,
                        Condition={
                            "StringEquals": {"secretsmanager:VersionStage": ["AWSCURRENT", "AWSPREVIOUS"]},
                            "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                        },
                    )
                )
            ],
            "keys": {"secretsmanager:VersionStage": ["AWSPREVIOUS"], "aws:SourceIp": ["10.1.2.3"]},
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "21b-values-or-keys-and-wrong-ip-denied",
        {
            "identity": [
                doc(
                    allow(
                        GSV,
                        Condition={
                            "StringEquals": {"secretsmanager:VersionStage": ["AWSCURRENT", "AWSPREVIOUS"]},
                            "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                        },
                    )
                )
            ],
            "keys": {"secretsmanager:VersionStage": ["AWSPREVIOUS"], "aws:SourceIp": ["192.168.1.1"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "22-principalarn-is-the-role-arn-for-a-session",
        {
            "resource": doc(
                allow(
                    GSV,
                    Principal="*",
                    Condition={"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCT}:role/app-*"}},
                )
            ),
            "principal": f"arn:aws:sts::{ACCT}:assumed-role/app-web/s1",
        },
        True,
        Reason.ALLOW_RESOURCE,
        None,
    ),
    (
        "23a-listsecrets-needs-resource-star",
        {
            "identity": [
                doc(
                    allow("secretsmanager:ListSecrets", f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:*"),
                    allow("secretsmanager:BatchGetSecretValue", P),
                )
            ],
            "action": "secretsmanager:ListSecrets",
            "target": "*",
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        msg(
            "because no identity-based policy allows the secretsmanager:ListSecrets action",
            action="secretsmanager:ListSecrets",
            target=None,
        ),
    ),
    (
        "23b-batchgetsecretvalue-needs-resource-star",
        {
            "identity": [
                doc(
                    allow("secretsmanager:ListSecrets", f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:*"),
                    allow("secretsmanager:BatchGetSecretValue", P),
                )
            ],
            "action": "secretsmanager:BatchGetSecretValue",
            "target": "*",
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        msg(
            "because no identity-based policy allows the secretsmanager:BatchGetSecretValue action",
            action="secretsmanager:BatchGetSecretValue",
            target=None,
        ),
    ),
    (
        "24-stringequals-star-is-literal",
        {
            "identity": [
                doc(allow(GSV, Condition={"StringEquals": {"secretsmanager:ResourceTag/env": "*"}}))
            ],
            "keys": {"secretsmanager:ResourceTag/env": ["prod"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "24b-stringlike-star-is-a-wildcard",
        {
            "identity": [doc(allow(GSV, Condition={"StringLike": {"secretsmanager:ResourceTag/env": "*"}}))],
            "keys": {"secretsmanager:ResourceTag/env": ["prod"]},
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "25a-unknown-secret-narrow-caller-access-denied",
        {
            "identity": [doc(allow(GSV, f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/*"))],
            "target": "nope",
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        msg(f"because no identity-based policy allows the {GSV} action", target="nope"),
    ),
    (
        "25b-unknown-secret-broad-caller-allowed-then-not-found",
        {"identity": [doc(allow(GSV, "*"))], "target": "nope"},
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    # --- ABAC patterns ---
    (
        "abac-a-case-differs-denied",
        {
            "identity": [doc(ABAC_A)],
            "tags": {"team": "payments"},
            "keys": {"secretsmanager:ResourceTag/team": ["Payments"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "abac-a-caller-without-team-denied",
        {"identity": [doc(ABAC_A)], "keys": {"secretsmanager:ResourceTag/team": ["payments"]}},
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "abac-a-resource-policy-twin-account-principal-needs-identity",
        {
            "resource": doc(
                {**ABAC_A, "Resource": "*", "Principal": {"AWS": f"arn:aws:iam::{ACCT}:root"}},
            ),
            "tags": {"team": "payments"},
            "keys": {"secretsmanager:ResourceTag/team": ["payments"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        NO_ID,
    ),
    (
        "abac-b-protected-owner-key-denied",
        {
            "identity": [doc(allow("secretsmanager:*"), ABAC_B)],
            "action": "secretsmanager:TagResource",
            "keys": {"aws:TagKeys": ["env", "Owner"]},
        },
        False,
        Reason.EXPLICIT_DENY_IDENTITY,
        None,
    ),
    (
        "abac-b-other-keys-allowed",
        {
            "identity": [doc(allow("secretsmanager:*"), ABAC_B)],
            "action": "secretsmanager:UntagResource",
            "keys": {"aws:TagKeys": ["env"]},
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "abac-b2-retag-to-other-team-denied",
        {
            "identity": [doc(allow("secretsmanager:*"), ABAC_B2)],
            "action": "secretsmanager:TagResource",
            "tags": {"team": "payments"},
            "keys": {"aws:RequestTag/team": ["hr"], "aws:TagKeys": ["team"]},
        },
        False,
        Reason.EXPLICIT_DENY_IDENTITY,
        None,
    ),
    (
        "abac-b2-tagging-without-team-allowed",
        {
            "identity": [doc(allow("secretsmanager:*"), ABAC_B2)],
            "action": "secretsmanager:TagResource",
            "tags": {"team": "payments"},
            "keys": {"aws:RequestTag/env": ["prod"], "aws:TagKeys": ["env"]},
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
    (
        "abac-c-no-tags-denied",
        {
            "identity": [doc(ABAC_C)],
            "action": "secretsmanager:CreateSecret",
            "target": NEW,
            "tags": {"team": "payments"},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        None,
    ),
    (
        "abac-c-other-team-denied",
        {
            "identity": [doc(ABAC_C)],
            "action": "secretsmanager:CreateSecret",
            "target": NEW,
            "tags": {"team": "payments"},
            "keys": {"aws:RequestTag/team": ["hr"], "aws:TagKeys": ["team"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        None,
    ),
    (
        "abac-c-extra-key-denied",
        {
            "identity": [doc(ABAC_C)],
            "action": "secretsmanager:CreateSecret",
            "target": NEW,
            "tags": {"team": "payments"},
            "keys": {"aws:RequestTag/team": ["payments"], "aws:TagKeys": ["team", "cost"]},
        },
        False,
        Reason.NO_IDENTITY_ALLOW,
        None,
    ),
    (
        "abac-c-team-and-env-allowed",
        {
            "identity": [doc(ABAC_C)],
            "action": "secretsmanager:TagResource",
            "target": NEW,
            "tags": {"team": "payments"},
            "keys": {"aws:RequestTag/team": ["payments"], "aws:TagKeys": ["team", "env"]},
        },
        True,
        Reason.ALLOW_IDENTITY,
        None,
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "allowed", "reason", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_conformance(kwargs: dict[str, Any], allowed: bool, reason: Reason, message: str | None) -> None:
    d = decide(**kwargs)
    assert (d.allowed, d.reason) == (allowed, reason), d
    if message is not None:
        assert d.message == message
    assert (d.message == "") == allowed


def test_5_wildcard_principal_is_broad_access_refused_with_block_public_policy() -> None:
    policy = parse_policy(doc(allow(GSV, Principal="*")), PolicyKind.RESOURCE)
    assert grants_broad_access(policy)
    err = PublicPolicy()
    assert err.code == "PublicPolicyException"
    assert "BlockPublicPolicy" in err.message


def test_denial_becomes_access_denied_exception() -> None:
    err = decide().error()
    assert err.code == "AccessDeniedException"
    assert err.message == NO_ID
