"""Key policies and metering through the gateway (kms → store → gateway, all real), driven by the `coffer`
command in-process: `coffer kms get-key-policy / put-key-policy` (JSON or file://) and `coffer usage get`."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest

from coffer.cli.main import main
from coffer.core.policy.keypolicy import LOCKOUT_MESSAGE, default_key_policy_text

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def cli(gw: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, [*argv, "--profile", str(gw.profile)], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_key_policy_cli(stack: Any, tmp_path: Path) -> None:
    code, out, err = await cli(stack, "kms", "create-key")
    assert code == 0, err
    key_id = json.loads(out)["KeyMetadata"]["KeyId"]
    code, out, err = await cli(stack, "kms", "get-key-policy", "--key-id", key_id)
    assert code == 0, err
    got = json.loads(out)
    assert got["PolicyName"] == "default"
    assert json.loads(got["Policy"]) == json.loads(default_key_policy_text("000000000000"))

    # a policy that would lock the caller out is refused (MalformedPolicyDocumentException)
    carol_only = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::000000000000:user/carol"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(carol_only))
    code, out, err = await cli(
        stack, "kms", "put-key-policy", "--key-id", key_id, "--policy", f"file://{path}"
    )
    assert code == 254 and out == ""
    assert err.strip() == (
        f"An error occurred (MalformedPolicyDocumentException) when calling the PutKeyPolicy operation: "
        f"{LOCKOUT_MESSAGE}"
    )
    # a policy that keeps the account's delegation, as inline JSON
    tightened = json.loads(default_key_policy_text("000000000000"))
    tightened["Statement"].append(
        {
            "Sid": "NoDisable",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:DisableKey",
            "Resource": "*",
        }
    )
    code, out, err = await cli(
        stack, "kms", "put-key-policy", "--key-id", key_id, "--policy", json.dumps(tightened)
    )
    assert (code, out) == (0, ""), err
    code, out, err = await cli(stack, "kms", "disable-key", "--key-id", key_id)
    assert code == 254
    assert "(AccessDeniedException)" in err and "with an explicit deny in a resource-based policy" in err


async def test_usage_cli(stack: Any) -> None:
    code, out, err = await cli(
        stack, "secretsmanager", "create-secret", "--name", "u/1", "--secret-string", "x"
    )
    assert code == 0, err
    code, out, err = await cli(stack, "secretsmanager", "get-secret-value", "--secret-id", "u/1")
    assert code == 0, err
    described = json.loads((await cli(stack, "secretsmanager", "describe-secret", "--secret-id", "u/1"))[1])
    created = described["CreatedDate"]
    ym = dt.datetime.fromisoformat(created).astimezone(dt.UTC).strftime("%Y-%m")
    code, out, err = await cli(stack, "usage", "get", "--month", ym)
    assert code == 0, err
    usage = json.loads(out)
    assert usage["AccountId"] == "000000000000" and usage["Month"] == ym
    calls = {c["Operation"]: c["Count"] for c in usage["ApiCalls"]}
    assert calls == {"CreateSecret": 1, "GetSecretValue": 1, "DescribeSecret": 1}
    assert usage["HoursInMonth"] in (672, 696, 720, 744)
    code, out, err = await cli(stack, "usage", "get", "--month", "2026-3")
    assert code == 254 and "(ValidationException)" in err
