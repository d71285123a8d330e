"""Condition operators, table-driven: every family, absent / present / several values / empty set, IfExists,
ForAllValues / ForAnyValue, variables and their defaults, AND across keys and operators, OR across values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coffer.core.policy import PolicyKind, Reason, RequestContext, evaluate, parse_policy

ACCT = "111122223333"
ALICE = f"arn:aws:iam::{ACCT}:user/alice"
P = f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:prod/db-AbCdEf"


def allowed(
    condition: dict[str, Any],
    keys: dict[str, list[str]] | None = None,
    *,
    tags: dict[str, str] | None = None,
    version: str = "2012-10-17",
    principal: str = ALICE,
) -> bool:
    text = json.dumps(
        {
            "Version": version,
            "Statement": {
                "Effect": "Allow",
                "Action": "secretsmanager:*",
                "Resource": "*",
                "Condition": condition,
            },
        }
    )
    ctx = RequestContext(
        principal_arn=principal,
        principal_account=ACCT,
        action="secretsmanager:GetSecretValue",
        resource=P,
        resource_account=ACCT,
        principal_tags=tags or {},
        keys=keys or {},
    )
    d = evaluate(ctx, [parse_policy(text, PolicyKind.IDENTITY)])
    assert d.reason is not Reason.EVALUATION_ERROR, d.detail
    return d.allowed


K = "coffer:k"
TAGS = "aws:TagKeys"

# (id, condition block, request keys, expected)
ROWS: list[tuple[str, dict[str, Any], dict[str, list[str]], bool]] = [
    # String exact
    ("str-eq-match", {"StringEquals": {K: "a"}}, {K: ["a"]}, True),
    ("str-eq-case", {"StringEquals": {K: "a"}}, {K: ["A"]}, False),
    ("str-eq-or-values", {"StringEquals": {K: ["a", "b"]}}, {K: ["b"]}, True),
    ("str-eq-absent", {"StringEquals": {K: "a"}}, {}, False),
    ("str-eq-empty-list-is-absent", {"StringEquals": {K: "a"}}, {K: []}, False),
    ("str-eq-empty-string-present", {"StringEquals": {K: ""}}, {K: [""]}, True),
    ("str-eq-no-partial", {"StringEquals": {K: "ab"}}, {K: ["abc"]}, False),
    ("str-ne-differs", {"StringNotEquals": {K: "a"}}, {K: ["b"]}, True),
    ("str-ne-equal", {"StringNotEquals": {K: "a"}}, {K: ["a"]}, False),
    ("str-ne-absent-true", {"StringNotEquals": {K: "a"}}, {}, True),
    ("str-ne-nor-values", {"StringNotEquals": {K: ["a", "b"]}}, {K: ["b"]}, False),
    ("str-ne-ifexists-absent", {"StringNotEqualsIfExists": {K: "a"}}, {}, True),
    ("str-eq-ifexists-present-mismatch", {"StringEqualsIfExists": {K: "a"}}, {K: ["b"]}, False),
    # folded
    ("fold-eq", {"StringEqualsIgnoreCase": {K: "PaYments"}}, {K: ["payments"]}, True),
    ("fold-ne", {"StringNotEqualsIgnoreCase": {K: "PAYMENTS"}}, {K: ["payments"]}, False),
    ("fold-ne-other", {"StringNotEqualsIgnoreCase": {K: "hr"}}, {K: ["payments"]}, True),
    ("fold-unicode", {"StringEqualsIgnoreCase": {K: "STRASSE"}}, {K: ["straße"]}, True),
    # glob
    ("like-star", {"StringLike": {K: "app/*"}}, {K: ["app/x/y"]}, True),
    ("like-star-empty-run", {"StringLike": {K: "app/*"}}, {K: ["app/"]}, True),
    ("like-qmark", {"StringLike": {K: "v?"}}, {K: ["v1"]}, True),
    ("like-qmark-exactly-one", {"StringLike": {K: "v?"}}, {K: ["v12"]}, False),
    ("like-case-sensitive", {"StringLike": {K: "App*"}}, {K: ["app"]}, False),
    ("like-no-wildcard-whole-string", {"StringLike": {K: "app"}}, {K: ["app2"]}, False),
    ("like-crosses-colon", {"StringLike": {K: "a*z"}}, {K: ["a:b/c:z"]}, True),
    ("like-brackets-literal", {"StringLike": {K: "[ab]*"}}, {K: ["a1"]}, False),
    ("like-brackets-literal-match", {"StringLike": {K: "[ab]*"}}, {K: ["[ab]1"]}, True),
    ("notlike-match", {"StringNotLike": {K: "key1*"}}, {K: ["key1a"]}, False),
    ("notlike-absent", {"StringNotLike": {K: "key1*"}}, {}, True),
    # numeric
    ("num-eq", {"NumericEquals": {K: "10"}}, {K: ["10.0"]}, True),
    ("num-ne", {"NumericNotEquals": {K: "10"}}, {K: ["11"]}, True),
    ("num-lt", {"NumericLessThan": {K: 30}}, {K: ["7"]}, True),
    ("num-lt-equal-false", {"NumericLessThan": {K: 30}}, {K: ["30"]}, False),
    ("num-le", {"NumericLessThanEquals": {K: 30}}, {K: ["30"]}, True),
    ("num-gt", {"NumericGreaterThan": {K: "1.5"}}, {K: ["2"]}, True),
    ("num-ge-false", {"NumericGreaterThanEquals": {K: "1.5"}}, {K: ["1.4"]}, False),
    ("num-absent", {"NumericLessThan": {K: 30}}, {}, False),
    ("num-absent-ifexists", {"NumericLessThanIfExists": {K: 30}}, {}, True),
    ("num-ne-absent", {"NumericNotEquals": {K: "1"}}, {}, True),
    # date
    (
        "date-lt",
        {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
        {"aws:CurrentTime": ["2026-12-01T03:00:00Z"]},
        True,
    ),
    (
        "date-gt-false",
        {"DateGreaterThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
        {"aws:CurrentTime": ["2026-12-01T03:00:00Z"]},
        False,
    ),
    (
        "date-date-only-midnight",
        {"DateEquals": {"aws:CurrentTime": "2026-12-01"}},
        {"aws:CurrentTime": ["2026-12-01T00:00:00Z"]},
        True,
    ),
    (
        "date-epoch-vs-iso",
        {"DateEquals": {"aws:EpochTime": "1764547200"}},
        {"aws:EpochTime": ["2025-12-01T00:00:00+00:00"]},
        True,
    ),
    (
        "date-offsets-same-instant",
        {"DateEquals": {K: "2026-01-01T01:00:00+01:00"}},
        {K: ["2026-01-01T00:00:00Z"]},
        True,
    ),
    ("date-ne", {"DateNotEquals": {K: "2026-01-01"}}, {K: ["2026-01-02"]}, True),
    ("date-le", {"DateLessThanEquals": {K: "2026-01-01"}}, {K: ["2026-01-01T00:00:00Z"]}, True),
    ("date-ge", {"DateGreaterThanEquals": {K: "2026-01-01"}}, {K: ["2025-12-31T23:59:59Z"]}, False),
    # bool
    ("bool-true", {"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": ["true"]}, True),
    ("bool-json-true", {"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": ["TRUE"]}, True),
    (
        "bool-false-vs-true",
        {"Bool": {"aws:SecureTransport": "false"}},
        {"aws:SecureTransport": ["true"]},
        False,
    ),
    ("bool-absent", {"Bool": {"aws:SecureTransport": "false"}}, {}, False),
    ("bool-ifexists-absent", {"BoolIfExists": {"aws:SecureTransport": "false"}}, {}, True),
    # binary
    ("binary-eq", {"BinaryEquals": {K: "QmluYXJ5"}}, {K: ["QmluYXJ5"]}, True),
    ("binary-ne-bytes", {"BinaryEquals": {K: "QmluYXJ5"}}, {K: ["QmluYXJa"]}, False),
    # ip
    ("ip-in-cidr", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": ["10.9.8.7"]}, True),
    ("ip-outside", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": ["11.0.0.1"]}, False),
    (
        "ip-bare-address-is-32",
        {"IpAddress": {"aws:SourceIp": "10.0.0.1"}},
        {"aws:SourceIp": ["10.0.0.1"]},
        True,
    ),
    (
        "ip-bare-address-other",
        {"IpAddress": {"aws:SourceIp": "10.0.0.1"}},
        {"aws:SourceIp": ["10.0.0.2"]},
        False,
    ),
    ("ip-v6", {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": ["2001:db8::1"]}, True),
    ("ip-v4-vs-v6", {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": ["10.0.0.1"]}, False),
    (
        "ip-or-values",
        {"IpAddress": {"aws:SourceIp": ["192.168.0.0/16", "10.0.0.0/8"]}},
        {"aws:SourceIp": ["10.1.1.1"]},
        True,
    ),
    ("notip-outside", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": ["11.0.0.1"]}, True),
    ("notip-inside", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": ["10.0.0.1"]}, False),
    ("notip-absent", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {}, True),
    # arn
    ("arn-like", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/*"}}, {}, True),
    ("arn-equals-is-like", {"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::*:user/alice"}}, {}, True),
    ("arn-not-like", {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/*"}}, {}, True),
    ("arn-not-equals-match", {"ArnNotEquals": {"aws:PrincipalArn": ALICE}}, {}, False),
    (
        "arnlike-segments-do-not-cross-colons",
        {"ArnLike": {K: "arn:aws:svc:*:111122223333:finance/*"}},
        {K: ["arn:aws:svc:us-east-2:999999999999:store/abc:111122223333:finance/x"]},
        False,
    ),
    (
        "stringlike-crosses-the-same-colons",
        {"StringLike": {K: "arn:aws:svc:*:111122223333:finance/*"}},
        {K: ["arn:aws:svc:us-east-2:999999999999:store/abc:111122223333:finance/x"]},
        True,
    ),
    ("arn-non-arn-request-value", {"ArnLike": {K: "*"}}, {K: ["not-an-arn"]}, False),
    (
        "arn-case-sensitive",
        {"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/Alice"}},
        {},
        False,
    ),
    # Null
    ("null-true-absent", {"Null": {K: "true"}}, {}, True),
    ("null-true-present", {"Null": {K: "true"}}, {K: ["x"]}, False),
    ("null-false-present", {"Null": {K: "false"}}, {K: ["x"]}, True),
    ("null-false-absent", {"Null": {K: "false"}}, {}, False),
    ("null-empty-set-is-absent", {"Null": {TAGS: "true"}}, {TAGS: []}, True),
    ("null-both-values-always", {"Null": {K: ["true", "false"]}}, {}, True),
    # set operators
    ("forall-subset", {"ForAllValues:StringEquals": {TAGS: ["a", "b"]}}, {TAGS: ["a"]}, True),
    ("forall-extra", {"ForAllValues:StringEquals": {TAGS: ["a", "b"]}}, {TAGS: ["a", "c"]}, False),
    ("forall-empty-set", {"ForAllValues:StringEquals": {TAGS: ["a"]}}, {TAGS: []}, True),
    ("forany-one", {"ForAnyValue:StringEquals": {TAGS: ["a", "b"]}}, {TAGS: ["c", "b"]}, True),
    ("forany-none", {"ForAnyValue:StringEquals": {TAGS: ["a", "b"]}}, {TAGS: ["c"]}, False),
    ("forany-empty", {"ForAnyValue:StringEquals": {TAGS: ["a"]}}, {TAGS: []}, False),
    ("forany-ifexists-absent", {"ForAnyValue:StringEqualsIfExists": {TAGS: ["a"]}}, {}, True),
    ("forall-notlike-other", {"ForAllValues:StringNotLike": {TAGS: "key1*"}}, {TAGS: ["key2"]}, True),
    ("forall-notlike-none", {"ForAllValues:StringNotLike": {TAGS: "key1*"}}, {}, True),
    ("forall-notlike-hit", {"ForAllValues:StringNotLike": {TAGS: "key1*"}}, {TAGS: ["key1a"]}, False),
    ("forany-notequals", {"ForAnyValue:StringNotEquals": {TAGS: ["a"]}}, {TAGS: ["a", "b"]}, True),
    ("forany-like", {"ForAnyValue:StringLike": {TAGS: ["own*"]}}, {TAGS: ["env", "owner"]}, True),
    ("plain-positive-on-multivalued-is-any", {"StringEquals": {TAGS: "b"}}, {TAGS: ["a", "b"]}, True),
    ("plain-negated-on-multivalued-is-all", {"StringNotEquals": {TAGS: "b"}}, {TAGS: ["a", "b"]}, False),
    ("forall-numeric", {"ForAllValues:NumericLessThan": {K: "10"}}, {K: ["1", "9"]}, True),
    # AND across keys and operators
    ("and-keys-both", {"StringEquals": {K: "a", "coffer:j": "b"}}, {K: ["a"], "coffer:j": ["b"]}, True),
    ("and-keys-one-fails", {"StringEquals": {K: "a", "coffer:j": "b"}}, {K: ["a"], "coffer:j": ["c"]}, False),
    (
        "and-operators-one-fails",
        {"StringEquals": {K: "a"}, "StringLike": {"coffer:j": "x*"}},
        {K: ["a"], "coffer:j": ["y"]},
        False,
    ),
    ("empty-operator-block-true", {"StringEquals": {}}, {}, True),
    ("empty-condition-true", {}, {}, True),
    # key names are case-insensitive, operator names too
    ("key-name-folded", {"StringEquals": {"COFFER:K": "a"}}, {"coffer:k": ["a"]}, True),
    ("operator-name-folded", {"stringequals": {K: "a"}}, {K: ["a"]}, True),
]


@pytest.mark.parametrize(("condition", "keys", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_operator(condition: dict[str, Any], keys: dict[str, list[str]], expected: bool) -> None:
    assert allowed(condition, keys) is expected


# Variables: (id, condition, request keys, principal tags, expected)
VARS: list[tuple[str, dict[str, Any], dict[str, list[str]], dict[str, str], bool]] = [
    (
        "var-principal-tag",
        {"StringEquals": {K: "${aws:PrincipalTag/team}"}},
        {K: ["pay"]},
        {"team": "pay"},
        True,
    ),
    (
        "var-principal-tag-key-folded",
        {"StringEquals": {K: "${aws:principaltag/TEAM}"}},
        {K: ["pay"]},
        {"team": "pay"},
        True,
    ),
    (
        "var-spaces-trimmed",
        {"StringEquals": {K: "${ aws:PrincipalTag/team }"}},
        {K: ["pay"]},
        {"team": "pay"},
        True,
    ),
    (
        "var-unresolved-positive-false",
        {"StringEquals": {K: "${aws:PrincipalTag/team}"}},
        {K: [""]},
        {},
        False,
    ),
    (
        "var-unresolved-negated-true",
        {"StringNotEquals": {K: "${aws:PrincipalTag/team}"}},
        {K: ["x"]},
        {},
        True,
    ),
    ("var-default-used", {"StringEquals": {K: "${aws:PrincipalTag/team, 'none'}"}}, {K: ["none"]}, {}, True),
    (
        "var-default-not-used-when-set",
        {"StringEquals": {K: "${aws:PrincipalTag/team, 'none'}"}},
        {K: ["none"]},
        {"team": "pay"},
        False,
    ),
    ("var-username", {"StringLike": {K: "home/${aws:username}/*"}}, {K: ["home/alice/x"]}, {}, True),
    (
        "var-value-star-stays-literal",
        {"StringLike": {K: "${aws:PrincipalTag/team}"}},
        {K: ["anything"]},
        {"team": "*"},
        False,
    ),
    (
        "var-value-star-matches-itself",
        {"StringLike": {K: "${aws:PrincipalTag/team}"}},
        {K: ["*"]},
        {"team": "*"},
        True,
    ),
    ("var-escape-star", {"StringEquals": {K: "a${*}b"}}, {K: ["a*b"]}, {}, True),
    ("var-escape-qmark-literal-in-like", {"StringLike": {K: "a${?}"}}, {K: ["ab"]}, {}, False),
    ("var-escape-dollar", {"StringEquals": {K: "${$}x"}}, {K: ["$x"]}, {}, True),
    (
        "var-in-arn",
        {"ArnEquals": {K: "arn:aws:iam::111122223333:user/${aws:username}"}},
        {K: [ALICE]},
        {},
        True,
    ),
    ("var-in-bool", {"Bool": {K: "${aws:PrincipalTag/flag}"}}, {K: ["true"]}, {"flag": "TRUE"}, True),
    (
        "var-ignorecase",
        {"StringEqualsIgnoreCase": {K: "${aws:PrincipalTag/team}"}},
        {K: ["PAY"]},
        {"team": "pay"},
        True,
    ),
]


@pytest.mark.parametrize(
    ("condition", "keys", "tags", "expected"), [v[1:] for v in VARS], ids=[v[0] for v in VARS]
)
def test_variables(
    condition: dict[str, Any], keys: dict[str, list[str]], tags: dict[str, str], expected: bool
) -> None:
    assert allowed(condition, keys, tags=tags) is expected


def test_variables_are_literal_under_2008() -> None:
    cond = {"StringEquals": {K: "${aws:username}"}}
    assert allowed(cond, {K: ["${aws:username}"]}, version="2008-10-17")
    assert not allowed(cond, {K: ["alice"]}, version="2008-10-17")


def _decide_raw(condition: dict[str, Any], keys: dict[str, list[str]]) -> Reason:
    text = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": condition},
        }
    )
    ctx = RequestContext(
        principal_arn=ALICE,
        principal_account=ACCT,
        action="secretsmanager:GetSecretValue",
        resource=P,
        keys=keys,
    )
    return evaluate(ctx, [parse_policy(text)]).reason


@pytest.mark.parametrize(
    ("condition", "keys"),
    [
        ({"NumericLessThan": {K: "1"}}, {K: ["lots"]}),
        ({"DateLessThan": {K: "2026-01-01"}}, {K: ["soon"]}),
        ({"IpAddress": {K: "10.0.0.0/8"}}, {K: ["host.example"]}),
        ({"BinaryEquals": {K: "QQ=="}}, {K: ["%%%"]}),
        (
            {"StringEquals": {"aws:resourcetag/TEAM": "a"}},
            {"aws:ResourceTag/team": ["a"], "aws:ResourceTag/Team": ["b"]},
        ),
    ],
    ids=["numeric-garbage", "date-garbage", "ip-garbage", "binary-garbage", "case-ambiguous-tag-keys"],
)
def test_type_errors_fail_closed(condition: dict[str, Any], keys: dict[str, list[str]]) -> None:
    assert _decide_raw(condition, keys) is Reason.EVALUATION_ERROR


def test_exact_spelling_resolves_case_ambiguous_keys() -> None:
    keys = {"aws:ResourceTag/team": ["a"], "aws:ResourceTag/Team": ["b"]}
    assert _decide_raw({"StringEquals": {"aws:ResourceTag/Team": "b"}}, keys) is Reason.ALLOW_IDENTITY
