"""Malformed policy documents: each is rejected with the precise reason (IAM's wording where IAM has one) and,
for resource policies, Secrets Manager's message; documents that are unusual but legal are accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coffer.core.policy import MalformedPolicy, PolicyKind, parse_policy
from coffer.core.policy.grammar import (
    MSG_NO_ACTIONS,
    MSG_NO_RESOURCES,
    MSG_ONE_COLON,
    MSG_PRINCIPAL_IN_IDENTITY,
    MSG_RESOURCE_VENDOR,
    MSG_SID,
    MSG_VENDOR,
    MSG_VERSION_CURRENT,
    iam_policy_size,
)

IDN = PolicyKind.IDENTITY
RES = PolicyKind.RESOURCE
GSV = "secretsmanager:GetSecretValue"
OK_STMT: dict[str, Any] = {"Effect": "Allow", "Action": GSV, "Resource": "*"}
OK_RSTMT: dict[str, Any] = {**OK_STMT, "Principal": {"AWS": "111122223333"}}


def d(*statements: Any, version: Any = "2012-10-17", **top: Any) -> str:
    doc: dict[str, Any] = {"Statement": list(statements) if len(statements) != 1 else statements[0], **top}
    if version is not None:
        doc["Version"] = version
    return json.dumps(doc)


def st(**kw: Any) -> dict[str, Any]:
    out = dict(OK_STMT)
    for k, v in kw.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def rst(**kw: Any) -> dict[str, Any]:
    out = dict(OK_RSTMT)
    for k, v in kw.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# (name, document text, kind, expected detail: exact text or substring prefixed with "~")
MALFORMED: list[tuple[str, str, PolicyKind, str]] = [
    ("invalid-json", '{"Version": "2012-10-17", "Statement": [', IDN, "~not valid JSON"),
    ("top-level-array", json.dumps([OK_STMT]), IDN, "The policy must be a JSON object."),
    ("top-level-string", '"hello"', IDN, "The policy must be a JSON object."),
    (
        "nan-literal",
        '{"Statement": {"Effect": "Allow", "Action": "a:b", "Resource": "*", "Condition": '
        '{"NumericEquals": {"a:b": NaN}}}}',
        IDN,
        "~not valid JSON",
    ),
    (
        "duplicate-effect",
        '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Effect":"Deny","Action":"a:b","Resource":"*"}}',
        IDN,
        "~duplicate member",
    ),
    (
        "duplicate-top-level-statement",
        '{"Statement":{"Effect":"Allow","Action":"a:b","Resource":"*"},"Statement":[]}',
        IDN,
        "~duplicate member",
    ),
    ("unknown-top-level-element", d(OK_STMT, Extra=1), IDN, "Unknown element Extra in the policy."),
    (
        "lower-case-element-name",
        json.dumps({"version": "2012-10-17", "Statement": OK_STMT}),
        IDN,
        "Unknown element version in the policy.",
    ),
    ("unknown-statement-element", d(st(Foo="x")), IDN, "Unknown element Foo in statement 0."),
    ("statement-missing", json.dumps({"Version": "2012-10-17"}), IDN, "The policy must contain a Statement."),
    (
        "statement-empty-array",
        json.dumps({"Version": "2012-10-17", "Statement": []}),
        IDN,
        "~non-empty array",
    ),
    ("statement-a-string", json.dumps({"Version": "2012-10-17", "Statement": "x"}), IDN, "~non-empty array"),
    (
        "statement-entry-not-object",
        json.dumps({"Version": "2012-10-17", "Statement": [OK_STMT, 5]}),
        IDN,
        "Statement 1 is not an object.",
    ),
    (
        "version-other-date",
        d(OK_STMT, version="2019-10-19"),
        RES,
        "The policy version 2019-10-19 is not valid.",
    ),
    (
        "version-number",
        json.dumps({"Version": 2012, "Statement": OK_STMT}),
        IDN,
        "The policy version 2012 is not valid.",
    ),
    ("identity-admin-api-needs-2012", d(OK_STMT, version="2008-10-17"), IDN, "!" + MSG_VERSION_CURRENT),
    ("id-not-string", d(OK_STMT, Id=5), IDN, "Id must be a string."),
    ("effect-missing", d(st(Effect=None)), IDN, "Missing required field Effect."),
    ("effect-lower-case", d(st(Effect="allow")), IDN, "Invalid effect: allow"),
    ("effect-other", d(st(Effect="Permit")), IDN, "Invalid effect: Permit"),
    (
        "action-and-notaction",
        d(st(NotAction="a:b")),
        IDN,
        "A statement must contain Action or NotAction, not both.",
    ),
    ("no-action", d(st(Action=None)), IDN, MSG_NO_ACTIONS),
    ("empty-action-list", d(st(Action=[])), IDN, "Action must be a string or a non-empty array of strings."),
    ("action-not-string", d(st(Action=5)), IDN, "Action must be a string or a non-empty array of strings."),
    (
        "action-list-with-number",
        d(st(Action=[GSV, 5])),
        IDN,
        "Action must be a string or a non-empty array of strings.",
    ),
    ("action-without-vendor", d(st(Action="GetSecretValue")), IDN, MSG_VENDOR),
    ("action-two-colons", d(st(Action="secretsmanager:Get:Value")), IDN, MSG_ONE_COLON),
    ("action-bad-vendor", d(st(Action="secrets_manager:Get")), IDN, "Vendor secrets_manager is not valid"),
    ("action-wildcard-vendor", d(st(Action="*:GetSecretValue")), IDN, "Vendor * is not valid"),
    ("action-with-variable", d(st(Action="secretsmanager:${aws:username}")), IDN, MSG_ONE_COLON),
    ("no-resource", d(st(Resource=None)), IDN, MSG_NO_RESOURCES),
    (
        "resource-and-notresource",
        d(st(NotResource="*")),
        IDN,
        "A statement must contain Resource or NotResource, not both.",
    ),
    ("resource-not-arn", d(st(Resource="prod/db")), IDN, 'Resource prod/db must be in ARN format or "*".'),
    (
        "resource-too-few-parts",
        d(st(Resource="arn:aws:secretsmanager:us-east-1")),
        IDN,
        'Resource arn:aws:secretsmanager:us-east-1 must be in ARN format or "*".',
    ),
    (
        "resource-wildcard-service",
        d(st(Resource="arn:aws:secrets*:us-east-1:111122223333:secret:x")),
        IDN,
        MSG_RESOURCE_VENDOR,
    ),
    (
        "resource-empty-list",
        d(st(Resource=[])),
        IDN,
        "Resource must be a string or a non-empty array of strings.",
    ),
    (
        "resource-variable-in-account",
        d(st(Resource="arn:aws:secretsmanager:*:${aws:PrincipalAccount}:secret:x")),
        IDN,
        "~not allowed in Resource outside its resource part",
    ),
    ("principal-in-identity-policy", d(st(Principal="*")), IDN, MSG_PRINCIPAL_IN_IDENTITY),
    (
        "notprincipal-in-identity-policy",
        d(st(NotPrincipal={"AWS": "111122223333"})),
        IDN,
        MSG_PRINCIPAL_IN_IDENTITY,
    ),
    ("resource-policy-without-principal", d(st()), RES, "~exactly one of Principal or NotPrincipal"),
    (
        "resource-policy-both-principals",
        d(rst(NotPrincipal={"AWS": "111122223333"})),
        RES,
        "~exactly one of Principal or NotPrincipal",
    ),
    (
        "notprincipal-with-allow",
        d(rst(Principal=None, NotPrincipal={"AWS": "111122223333"})),
        RES,
        "NotPrincipal may be used only with Deny.",
    ),
    (
        "principal-partial-wildcard",
        d(rst(Principal={"AWS": "arn:aws:iam::*:role/x"})),
        RES,
        "@Unsupported principal arn:aws:iam::*:role/x",
    ),
    ("principal-unknown-string", d(rst(Principal="alice")), RES, "@Unsupported principal alice"),
    (
        "principal-federated",
        d(rst(Principal={"Federated": "cognito-identity.amazonaws.com"})),
        RES,
        "@Unsupported principal type Federated",
    ),
    (
        "principal-canonical-user",
        d(rst(Principal={"CanonicalUser": "abc"})),
        RES,
        "@Unsupported principal type CanonicalUser",
    ),
    ("principal-short-account", d(rst(Principal={"AWS": "12345"})), RES, "@Unsupported principal 12345"),
    (
        "principal-s3-arn",
        d(rst(Principal={"AWS": "arn:aws:s3:::bucket"})),
        RES,
        "@Unsupported principal arn:aws:s3:::bucket",
    ),
    ("principal-empty-map", d(rst(Principal={})), RES, '@Principal must be "*" or an object.'),
    (
        "duplicate-sid",
        d([st(Sid="A"), st(Sid="A")]),
        IDN,
        "Statement IDs (SID) in a single policy must be unique: A",
    ),
    ("non-alphanumeric-sid-identity", d(st(Sid="read-only")), IDN, MSG_SID),
    ("sid-not-string", d(st(Sid=1)), IDN, "Sid must be a string."),
    (
        "unknown-operator",
        d(st(Condition={"StringEqualz": {"aws:username": "a"}})),
        IDN,
        "Unknown condition operator StringEqualz.",
    ),
    (
        "null-ifexists",
        d(st(Condition={"NullIfExists": {"aws:username": "true"}})),
        IDN,
        "~Null takes neither IfExists",
    ),
    (
        "set-qualifier-on-null",
        d(st(Condition={"ForAnyValue:Null": {"aws:TagKeys": "true"}})),
        IDN,
        "~Null takes neither",
    ),
    (
        "operator-value-not-object",
        d(st(Condition={"StringEquals": "x"})),
        IDN,
        "The value of condition operator StringEquals must be an object.",
    ),
    ("condition-not-object", d(st(Condition=["x"])), IDN, "Condition must be an object."),
    ("condition-key-without-vendor", d(st(Condition={"StringEquals": {"username": "a"}})), IDN, MSG_VENDOR),
    (
        "condition-value-object",
        d(st(Condition={"StringEquals": {"aws:username": {"a": 1}}})),
        IDN,
        "~must be a string, number or boolean",
    ),
    (
        "condition-value-null",
        d(st(Condition={"StringEquals": {"aws:username": None}})),
        IDN,
        "~must be a string, number or boolean",
    ),
    (
        "condition-value-nested-array",
        d(st(Condition={"StringEquals": {"aws:username": [["a"]]}})),
        IDN,
        "~must be a string, number or boolean",
    ),
    (
        "condition-value-empty-array",
        d(st(Condition={"StringEquals": {"aws:username": []}})),
        IDN,
        "~must not be empty",
    ),
    (
        "numeric-literal-not-number",
        d(st(Condition={"NumericLessThan": {"secretsmanager:RecoveryWindowInDays": "ten"}})),
        IDN,
        "~not valid for condition operator",
    ),
    (
        "date-literal-not-date",
        d(st(Condition={"DateLessThan": {"aws:CurrentTime": "yesterday"}})),
        IDN,
        "~not valid for condition operator",
    ),
    (
        "ip-literal-not-cidr",
        d(st(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}})),
        IDN,
        "~not valid for condition operator",
    ),
    (
        "bool-literal-not-bool",
        d(st(Condition={"Bool": {"aws:SecureTransport": "yes"}})),
        IDN,
        "~not valid for condition operator",
    ),
    (
        "binary-literal-not-base64",
        d(st(Condition={"BinaryEquals": {"aws:x": "!!!"}})),
        IDN,
        "~not valid for condition operator",
    ),
    (
        "null-literal-not-bool",
        d(st(Condition={"Null": {"aws:x": "maybe"}})),
        IDN,
        "~not valid for condition operator",
    ),
    (
        "variable-in-numeric",
        d(st(Condition={"NumericEquals": {"aws:x": "${aws:y}"}})),
        IDN,
        "~not allowed in NumericEquals",
    ),
    (
        "variable-in-ip",
        d(st(Condition={"IpAddress": {"aws:SourceIp": "${aws:y}"}})),
        IDN,
        "~not allowed in IpAddress",
    ),
    (
        "variable-in-condition-key",
        d(st(Condition={"StringEquals": {"aws:PrincipalTag/${aws:username}": "x"}})),
        IDN,
        "~not allowed in condition keys",
    ),
    (
        "multivalued-key-as-variable",
        d(st(Condition={"StringEquals": {"aws:username": "${aws:TagKeys}"}})),
        IDN,
        "~multivalued key",
    ),
    (
        "unclosed-variable",
        d(st(Resource="arn:aws:secretsmanager:*:*:secret:${aws:username")),
        IDN,
        "~Invalid policy variable",
    ),
    (
        "bad-variable-default",
        d(st(Resource="arn:aws:secretsmanager:*:*:secret:${aws:username, x}")),
        IDN,
        "~Invalid default value",
    ),
]


@pytest.mark.parametrize(
    ("text", "kind", "expected"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed(text: str, kind: PolicyKind, expected: str) -> None:
    require_current = expected.startswith("!")
    with pytest.raises(MalformedPolicy) as ei:
        parse_policy(text, kind, require_current=require_current)
    err = ei.value
    want = expected.lstrip("!@")
    if want.startswith("~"):
        assert want[1:] in err.detail
    else:
        assert err.detail == want
    if kind is PolicyKind.RESOURCE:
        assert err.code == "MalformedPolicyDocumentException"
        principal = expected.startswith("@")
        assert err.message == (
            "This resource policy contains an unsupported principal"
            if principal
            else "This policy has invalid syntax."
        )
    else:
        assert err.code == "MalformedPolicyDocument"
        assert err.message == err.detail


# Unusual but legal.
ACCEPTED: list[tuple[str, str, PolicyKind]] = [
    ("statement-as-single-object", d(OK_STMT), IDN),
    ("no-version", d(OK_STMT, version=None), IDN),
    ("version-2008", d(rst(), version="2008-10-17"), RES),
    ("id-ignored", d(OK_STMT, Id="my-policy"), IDN),
    ("unknown-action-name", d(st(Action="secretsmanager:NoSuchThing")), IDN),
    ("other-service-action-in-secret-policy", d(rst(Action="s3:GetObject")), RES),
    ("empty-condition", d(st(Condition={})), IDN),
    ("operator-with-empty-object", d(st(Condition={"StringEquals": {}})), IDN),
    ("stringequals-star", d(st(Condition={"StringEquals": {"aws:username": "*"}})), IDN),
    ("allow-with-notaction", d(st(Action=None, NotAction="secretsmanager:DeleteSecret")), IDN),
    ("allow-with-notresource", d(st(Resource=None, NotResource="arn:aws:secretsmanager:*:*:secret:x*")), IDN),
    ("principal-star", d(rst(Principal="*")), RES),
    ("principal-aws-star", d(rst(Principal={"AWS": "*"})), RES),
    (
        "principal-list",
        d(rst(Principal={"AWS": ["111122223333", "arn:aws:iam::444455556666:role/app"]})),
        RES,
    ),
    ("principal-service", d(rst(Principal={"Service": "rotation.coffer"})), RES),
    ("principal-session", d(rst(Principal={"AWS": "arn:aws:sts::111122223333:assumed-role/app/s1"})), RES),
    ("deny-notprincipal", d(rst(Effect="Deny", Principal=None, NotPrincipal={"AWS": "111122223333"})), RES),
    (
        "set-qualifier-single-valued-key",
        d(st(Condition={"ForAllValues:StringEquals": {"aws:username": "a"}})),
        IDN,
    ),
    ("plain-operator-multivalued-key", d(st(Condition={"StringEquals": {"aws:TagKeys": "a"}})), IDN),
    ("unknown-condition-key", d(st(Condition={"StringEquals": {"coffer:whatever": "a"}})), IDN),
    ("operator-name-odd-case", d(st(Condition={"stringequalsIGNORECASE": {"AWS:UserName": "a"}})), IDN),
    (
        "variables-literal-under-2008",
        d(st(Resource="arn:aws:secretsmanager:*:${x}:secret:${aws:username"), version="2008-10-17"),
        IDN,
    ),
    ("empty-sid-repeated", d([st(Sid=""), st(Sid="")]), IDN),
    ("resource-policy-any-unicode", d(rst(Condition={"StringEquals": {"aws:username": "\u2603"}})), RES),
    (
        "identity-latin1-and-tabs",
        '{"Statement":\t{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"StringEquals":{"aws:x":"\u00e9"}}}}',
        IDN,
    ),
    ("resource-policy-sid-any-string", d(rst(Sid="read only!")), RES),
    (
        "resource-naming-another-secret",
        d(rst(Resource="arn:aws:secretsmanager:us-east-1:111122223333:secret:other-AbCdEf")),
        RES,
    ),
    (
        "json-boolean-and-number-values",
        d(st(Condition={"Bool": {"aws:SecureTransport": True}, "NumericLessThan": {"aws:x": 5}})),
        IDN,
    ),
    ("variable-escapes", d(st(Resource="arn:aws:secretsmanager:*:*:secret:a${*}b${?}c${$}")), IDN),
    (
        "variable-with-default",
        d(st(Resource="arn:aws:secretsmanager:*:*:secret:${ aws:username , 'nobody' }-*")),
        IDN,
    ),
]


@pytest.mark.parametrize(("text", "kind"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_accepted(text: str, kind: PolicyKind) -> None:
    assert parse_policy(text, kind).statements


def test_condition_values_canonical_text() -> None:
    text = (
        '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":'
        '{"Bool":{"aws:SecureTransport":true},"StringEquals":{"aws:x":[1.50,7,false]}}}}'
    )
    p = parse_policy(text, IDN)
    raws = {c.key: c.raw for c in p.statements[0].conditions}
    assert raws == {"aws:securetransport": ("true",), "aws:x": ("1.50", "7", "false")}


def test_iam_size_ignores_whitespace() -> None:
    assert iam_policy_size('{ "a" :\n\t"b c" }') == 10
