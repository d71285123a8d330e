"""`coffer iam | sts | organizations` in-process against a real stack: flags built from the protos, AWS JSON
out (PascalCase, IAM timestamps as ISO-8601), AWS CLI errors and exit codes."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from coffer.cli.main import main

from .conftest import IamStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = "000000000000"


async def cli(stack: IamStack, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, [*argv, "--profile", str(stack.profile)], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_iam_commands(iam_stack: IamStack, tmp_path: Path) -> None:
    code, out, err = await cli(
        iam_stack, "iam", "create-user", "--user-name", "alice", "--tags", "Key=team,Value=payments"
    )
    assert code == 0, err
    user = json.loads(out)["User"]
    assert user["UserName"] == "alice" and user["Arn"] == f"arn:aws:iam::{ROOT}:user/alice"
    assert user["UserId"].startswith("AIDA") and user["Path"] == "/"
    assert user["Tags"] == [{"Key": "team", "Value": "payments"}]
    created = dt.datetime.fromisoformat(user["CreateDate"])
    assert created.utcoffset() == dt.timedelta(0)

    code, out, err = await cli(iam_stack, "iam", "list-users")
    assert code == 0, err
    listed = json.loads(out)
    assert [u["UserName"] for u in listed["Users"]] == ["admin", "alice", "coffer-rotation"]
    assert listed["IsTruncated"] is False

    code, out, err = await cli(iam_stack, "iam", "get-user", "--user-name", "nobody")
    assert (code, out) == (254, "")
    assert err.strip() == (
        "An error occurred (NoSuchEntity) when calling the GetUser operation: "
        "The user with name nobody cannot be found."
    )

    policy = tmp_path / "read.json"
    policy.write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
                ],
            }
        )
    )
    code, out, err = await cli(
        iam_stack,
        "iam",
        "put-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "read",
        "--policy-document",
        f"file://{policy}",
    )
    assert (code, out) == (0, ""), err
    code, out, err = await cli(
        iam_stack, "iam", "get-user-policy", "--user-name", "alice", "--policy-name", "read"
    )
    assert code == 0, err
    assert json.loads(out) == {
        "UserName": "alice",
        "PolicyName": "read",
        "PolicyDocument": policy.read_text(),
    }
    code, out, err = await cli(
        iam_stack,
        "iam",
        "put-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "bad",
        "--policy-document",
        '{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:*"}}',
    )
    assert code == 254
    assert err.strip() == (
        "An error occurred (MalformedPolicyDocument) when calling the PutUserPolicy operation: "
        "Policy statement must contain resources."
    )

    code, out, err = await cli(iam_stack, "iam", "create-access-key", "--user-name", "alice")
    assert code == 0, err
    key = json.loads(out)["AccessKey"]
    assert set(key) == {"UserName", "AccessKeyId", "Status", "SecretAccessKey", "CreateDate"}
    code, out, err = await cli(
        iam_stack,
        "iam",
        "update-access-key",
        "--user-name",
        "alice",
        "--access-key-id",
        key["AccessKeyId"],
        "--status",
        "Inactive",
    )
    assert (code, out) == (0, ""), err
    code, out, err = await cli(iam_stack, "iam", "list-access-keys", "--user-name", "alice")
    assert code == 0, err
    (meta,) = json.loads(out)["AccessKeyMetadata"]
    assert meta["AccessKeyId"] == key["AccessKeyId"] and meta["Status"] == "Inactive"
    assert "SecretAccessKey" not in meta

    code, out, err = await cli(iam_stack, "iam", "delete-user", "--user-name", "alice")
    assert code == 254 and "(DeleteConflict)" in err

    code, out, err = await cli(iam_stack, "iam", "create-user")
    assert code == 252 and "--user-name" in err


async def test_role_sts_and_organizations_commands(iam_stack: IamStack) -> None:
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ROOT}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    code, out, err = await cli(
        iam_stack,
        "iam",
        "create-role",
        "--role-name",
        "app",
        "--assume-role-policy-document",
        trust,
        "--max-session-duration",
        "7200",
    )
    assert code == 0, err
    role = json.loads(out)["Role"]
    assert role["RoleName"] == "app" and role["MaxSessionDuration"] == 7200
    assert role["AssumeRolePolicyDocument"] == trust and role["RoleId"].startswith("AROA")

    code, out, err = await cli(iam_stack, "sts", "get-caller-identity")
    assert code == 0, err
    me = json.loads(out)
    assert me["Account"] == ROOT and me["Arn"] == f"arn:aws:iam::{ROOT}:user/admin" and me["UserId"]

    code, out, err = await cli(
        iam_stack,
        "sts",
        "assume-role",
        "--role-arn",
        role["Arn"],
        "--role-session-name",
        "cli",
        "--duration-seconds",
        "900",
    )
    assert code == 0, err
    assumed = json.loads(out)
    assert assumed["AssumedRoleUser"] == {
        "AssumedRoleId": f"{role['RoleId']}:cli",
        "Arn": f"arn:aws:sts::{ROOT}:assumed-role/app/cli",
    }
    creds = assumed["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SecretAccessKey"] and creds["SessionToken"]
    expires = dt.datetime.fromisoformat(creds["Expiration"])
    assert dt.timedelta(seconds=800) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=900)

    code, out, err = await cli(
        iam_stack, "organizations", "create-account", "--account-name", "team-a", "--email", "a@example.com"
    )
    assert code == 0, err
    made = json.loads(out)
    assert made["Account"]["Name"] == "team-a" and made["AdminUserName"] == "admin"
    assert made["AccessKey"]["AccessKeyId"].startswith("AKIA")
    code, out, err = await cli(iam_stack, "organizations", "list-accounts")
    assert code == 0, err
    assert [a["Id"] for a in json.loads(out)["Accounts"]] == sorted([ROOT, made["Account"]["Id"]])
