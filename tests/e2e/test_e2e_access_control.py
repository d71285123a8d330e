"""Who may do what, end to end: a deployment built as ``make run`` builds it, driven only through the
``coffer`` command, as the root admin (the profile) and as other principals (``COFFER_ACCESS_KEY_ID`` /
``COFFER_SECRET_ACCESS_KEY`` / ``COFFER_SESSION_TOKEN``, which win over the profile). Every denial is
checked in AWS's words, and every call, the denied ones too, is then found in ``coffer audit
lookup-events``; the trail verifies, and an event edited in SQL makes ``coffer audit verify`` fail naming
it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from coffer.testing.wait import eventually_sync

from .conftest import CLI_SERVICE_ERROR, cli_env, coffer_command

pytestmark = pytest.mark.e2e

SM = "secretsmanager"
#: What a reader in another account needs in its own policy: the secret, and the key that opens it.
READ_ACROSS = ["secretsmanager:GetSecretValue", "kms:Decrypt"]


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def as_principal(e2e: Any, keys: Keys, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(e2e.profile_path)
    env["COFFER_ACCESS_KEY_ID"] = keys.access_key_id
    env["COFFER_SECRET_ACCESS_KEY"] = keys.secret_access_key
    if keys.session_token:
        env["COFFER_SESSION_TOKEN"] = keys.session_token
    return subprocess.run(
        [*coffer_command(), *args],
        env=env,
        cwd=e2e.profile_path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout) if result.stdout.strip() else {}


def refused(result: subprocess.CompletedProcess[str], code: str, operation: str) -> str:
    """The AWS-CLI-shaped failure ``code`` of ``operation``; returns its message."""
    assert result.returncode == CLI_SERVICE_ERROR, (result.returncode, result.stdout, result.stderr)
    prefix = f"An error occurred ({code}) when calling the {operation} operation: "
    assert prefix in result.stderr, result.stderr
    return result.stderr.split(prefix, 1)[1].strip()


def new_user(e2e: Any, name: str, policy: dict[str, Any], *tags: str) -> Keys:
    e2e.cli_json("iam", "create-user", "--user-name", name, *(("--tags", *tags) if tags else ()))
    e2e.cli_json(
        "iam", "put-user-policy", "--user-name", name, "--policy-name", "inline", "--policy-document",
        json.dumps(policy),
    )  # fmt: skip
    key = e2e.cli_json("iam", "create-access-key", "--user-name", name)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"])


def doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def sql(e2e: Any, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(e2e.database_url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def test_access_control_and_audit_through_the_cli(e2e: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    me = e2e.cli_json("sts", "get-caller-identity")
    assert me["Arn"] == "arn:aws:iam::000000000000:user/admin" and me["Account"] == "000000000000"
    region = e2e.settings.region
    secret_arn_prefix = f"arn:aws:secretsmanager:{region}:000000000000:secret:"

    # --- an identity policy on a name prefix ------------------------------------------------------------
    app_x = e2e.cli_json(SM, "create-secret", "--name", f"app/{tag}-x", "--secret-string", "app-value")
    db_y = e2e.cli_json(SM, "create-secret", "--name", f"db/{tag}-y", "--secret-string", "db-value")
    reader = new_user(
        e2e,
        f"reader-{tag}",
        doc(
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": f"{secret_arn_prefix}app/*",
            }
        ),
    )
    reader_arn = f"arn:aws:iam::000000000000:user/reader-{tag}"
    got = eventually_sync(
        lambda: ok_json(as_principal(e2e, reader, SM, "get-secret-value", "--secret-id", f"app/{tag}-x")),
        timeout=10,
        retry_on=(AssertionError,),
        message="the new user's first read",
    )
    assert got["SecretString"] == "app-value"
    message = refused(
        as_principal(e2e, reader, SM, "get-secret-value", "--secret-id", f"db/{tag}-y"),
        "AccessDeniedException",
        "GetSecretValue",
    )
    assert message == (
        f"User: {reader_arn} is not authorized to perform: secretsmanager:GetSecretValue on resource: "
        f"{db_y['ARN']} because no identity-based policy allows the secretsmanager:GetSecretValue action"
    )
    message = refused(
        as_principal(
            e2e, reader, SM, "put-secret-value", "--secret-id", f"app/{tag}-x", "--secret-string", "no"
        ),
        "AccessDeniedException",
        "PutSecretValue",
    )
    assert message == (
        f"User: {reader_arn} is not authorized to perform: secretsmanager:PutSecretValue on resource: "
        f"{app_x['ARN']} because no identity-based policy allows the secretsmanager:PutSecretValue action"
    )
    # GetRandomPassword, answered by the gateway itself, is decided by the same policies (no resource)
    message = refused(
        as_principal(e2e, reader, SM, "get-random-password"), "AccessDeniedException", "GetRandomPassword"
    )
    assert message == (
        f"User: {reader_arn} is not authorized to perform: secretsmanager:GetRandomPassword because no "
        "identity-based policy allows the secretsmanager:GetRandomPassword action"
    )
    # a secret that does not exist: the narrowly scoped reader learns nothing (AccessDenied, not NotFound)
    refused(
        as_principal(e2e, reader, SM, "get-secret-value", "--secret-id", f"db/{tag}-none"),
        "AccessDeniedException",
        "GetSecretValue",
    )

    # --- ABAC: the secret's team tag must equal the caller's --------------------------------------------
    for team in ("blue", "red"):
        e2e.cli_json(
            SM, "create-secret", "--name", f"team/{tag}-{team}", "--secret-string", f"{team}-value",
            "--tags", f"Key=team,Value={team}",
        )  # fmt: skip
    blue = new_user(
        e2e,
        f"blue-{tag}",
        doc(
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"secretsmanager:ResourceTag/team": "${aws:PrincipalTag/team}"}
                },
            }
        ),
        "Key=team,Value=blue",
    )
    got = eventually_sync(
        lambda: ok_json(as_principal(e2e, blue, SM, "get-secret-value", "--secret-id", f"team/{tag}-blue")),
        timeout=10,
        retry_on=(AssertionError,),
        message="the blue user's first read",
    )
    assert got["SecretString"] == "blue-value"
    refused(
        as_principal(e2e, blue, SM, "get-secret-value", "--secret-id", f"team/{tag}-red"),
        "AccessDeniedException",
        "GetSecretValue",
    )

    # --- BlockPublicPolicy ------------------------------------------------------------------------------
    public = doc(
        {"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
    )
    message = refused(
        e2e.cli(
            SM, "put-resource-policy", "--secret-id", f"app/{tag}-x", "--resource-policy", json.dumps(public),
            "--block-public-policy",
        ),
        "PublicPolicyException",
        "PutResourcePolicy",
    )  # fmt: skip
    assert "public" in message.lower() or "broad" in message.lower(), message

    # --- a second account's role, through a resource policy and a customer-managed key ------------------
    created = e2e.cli_json(
        "organizations", "create-account", "--account-name", f"partner-{tag}", "--email", f"{tag}@example.com"
    )
    other = created["Account"]["Id"]
    other_admin = Keys(created["AccessKey"]["AccessKeyId"], created["AccessKey"]["SecretAccessKey"])
    trust = doc(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{other}:root"}, "Action": "sts:AssumeRole"}
    )
    role = eventually_sync(
        lambda: ok_json(
            as_principal(
                e2e, other_admin, "iam", "create-role", "--role-name", "reader",
                "--assume-role-policy-document", json.dumps(trust),
            )
        ),
        timeout=10,
        retry_on=(AssertionError,),
        message="the new account's admin's first call",
    )  # fmt: skip
    role_arn = role["Role"]["Arn"]
    ok_json(
        as_principal(
            e2e, other_admin, "iam", "put-role-policy", "--role-name", "reader", "--policy-name", "read",
            "--policy-document",
            json.dumps(doc({"Effect": "Allow", "Action": READ_ACROSS, "Resource": "*"})),
        )
    )  # fmt: skip
    session = ok_json(
        as_principal(
            e2e, other_admin, "sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "partner",
            "--duration-seconds", "900",
        )
    )["Credentials"]  # fmt: skip
    partner = Keys(session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"])
    shared_key = e2e.cli_json(
        "kms",
        "create-key",
        "--description",
        "shared with the partner",
        "--policy",
        json.dumps(
            doc(
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ["arn:aws:iam::000000000000:root", f"arn:aws:iam::{other}:root"]},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            )
        ),
    )["KeyMetadata"]["Arn"]
    with_cmk = e2e.cli_json(
        SM, "create-secret", "--name", f"shared/{tag}-cmk", "--secret-string", "for-the-partner",
        "--kms-key-id", shared_key,
    )  # fmt: skip
    with_default = e2e.cli_json(
        SM, "create-secret", "--name", f"shared/{tag}-default", "--secret-string", "default-key"
    )
    grant = doc(
        {
            "Effect": "Allow",
            "Principal": {"AWS": role_arn},
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
        }
    )
    for arn in (with_cmk["ARN"], with_default["ARN"]):
        e2e.cli_json(SM, "put-resource-policy", "--secret-id", arn, "--resource-policy", json.dumps(grant))
    got = ok_json(as_principal(e2e, partner, SM, "get-secret-value", "--secret-id", with_cmk["ARN"]))
    assert got["SecretString"] == "for-the-partner"
    assert (
        refused(
            as_principal(e2e, partner, SM, "get-secret-value", "--secret-id", with_default["ARN"]),
            "AccessDeniedException",
            "GetSecretValue",
        )
        == "Access to KMS is not allowed"
    )
    # the partner's names are its own account's: by name it finds nothing of ours
    refused(
        as_principal(e2e, partner, SM, "get-secret-value", "--secret-id", f"shared/{tag}-cmk"),
        "ResourceNotFoundException",
        "GetSecretValue",
    )

    # --- an expired session stops working ---------------------------------------------------------------
    # (a session lasts at least 15 minutes; its expiry is moved into the past in SQL, with the change notice
    # every IAM write sends, as the clock would have it at the end of the session)
    sql(
        e2e,
        "UPDATE store.iam_access_keys SET expires_at = now() - interval '1 second' WHERE access_key_id = $1",
        partner.access_key_id,
    )
    sql(e2e, "SELECT pg_notify('coffer_iam', $1)", json.dumps({"access_key_ids": [partner.access_key_id]}))
    eventually_sync(
        lambda: refused(
            as_principal(e2e, partner, SM, "get-secret-value", "--secret-id", with_cmk["ARN"]),
            "ExpiredTokenException",
            "GetSecretValue",
        ),
        timeout=10,
        retry_on=(AssertionError,),
        message="the expired session refused",
    )

    # --- a deleted access key stops working at once on a gateway that had just served it ----------------
    assert ok_json(as_principal(e2e, reader, SM, "get-secret-value", "--secret-id", f"app/{tag}-x"))
    e2e.cli_json(
        "iam", "delete-access-key", "--user-name", f"reader-{tag}", "--access-key-id", reader.access_key_id
    )
    deleted_at = time.monotonic()
    eventually_sync(
        lambda: refused(
            as_principal(e2e, reader, SM, "get-secret-value", "--secret-id", f"app/{tag}-x"),
            "UnrecognizedClientException",
            "GetSecretValue",
        ),
        timeout=10,
        interval=0.05,
        retry_on=(AssertionError,),
        message="the deleted key refused",
    )
    print(f"deleted access key refused {time.monotonic() - deleted_at:.2f} s after DeleteAccessKey returned")

    # --- every call above is in the trail, the denied ones too -----------------------------------------
    def events(**attribute: str) -> list[dict[str, Any]]:
        (key, value), *_ = attribute.items()
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = e2e.cli_json(
                "audit", "lookup-events", "--lookup-attributes", f"AttributeKey={key},AttributeValue={value}",
                *(("--next-token", token) if token else ()),
            )  # fmt: skip
            out += [json.loads(event["CloudTrailEvent"]) for event in page["Events"]]
            token = page.get("NextToken")
            if not token:
                return out

    reader_events = [e for e in events(Username=f"reader-{tag}") if e["eventName"] == "GetSecretValue"]
    outcomes = sorted({(e["requestParameters"]["secretId"], e.get("errorCode", "")) for e in reader_events})
    assert (f"app/{tag}-x", "") in outcomes
    # CloudTrail names an AccessDeniedException "AccessDenied"
    assert (f"db/{tag}-y", "AccessDenied") in outcomes
    assert (f"db/{tag}-none", "AccessDenied") in outcomes
    denied_put = [e for e in events(EventName="PutSecretValue") if e["userIdentity"].get("arn") == reader_arn]
    assert denied_put and denied_put[0]["errorCode"] == "AccessDenied"
    assert all(
        "SecretString" not in json.dumps(e) and "app-value" not in json.dumps(e) for e in reader_events
    )
    assert any(
        e["userIdentity"].get("arn") == f"arn:aws:iam::000000000000:user/blue-{tag}"
        for e in events(EventName="GetSecretValue")
    )
    assert events(EventName="PutResourcePolicy")
    assert events(EventName="CreateAccount") and events(EventName="DeleteAccessKey")

    # each account sees its own events only, and only with cloudtrail:LookupEvents
    partner_view = ok_json(as_principal(e2e, other_admin, "audit", "lookup-events"))["Events"]
    assert partner_view, "the partner admin's own calls"
    assert {json.loads(e["CloudTrailEvent"])["userIdentity"]["accountId"] for e in partner_view} == {other}
    assert all(json.loads(e["CloudTrailEvent"])["userIdentity"]["accountId"] == "000000000000" for e in
               e2e.cli_json("audit", "lookup-events")["Events"])  # fmt: skip
    refused(as_principal(e2e, blue, "audit", "lookup-events"), "AccessDeniedException", "LookupEvents")

    # --- the trail verifies, and an event edited in SQL is named -----------------------------------------
    verified = e2e.cli("audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("OK:"), (verified.stdout, verified.stderr)
    victim = sql(
        e2e,
        "SELECT seq, event_id FROM store.audit_events"
        " WHERE event_name = 'GetSecretValue' AND error_code = 'AccessDenied' ORDER BY seq LIMIT 1",
    )[0]
    sql(
        e2e,
        "UPDATE store.audit_events SET record = replace(record, 'AccessDenied', 'NothingHappened')"
        " WHERE seq = $1",
        victim["seq"],
    )
    tampered = e2e.cli("audit", "verify")
    assert tampered.returncode != 0, tampered.stdout
    assert f"seq {victim['seq']}" in tampered.stdout and str(victim["event_id"]) in tampered.stdout, (
        tampered.stdout
    )
