"""Rotation through the public gateway (real gateway, store and kms over TLS/mTLS, real PostgreSQL), driven by
the `coffer` command in-process: rotate-secret with shorthand and JSON rotation rules, describe-secret,
`coffer rotation history`, cancel-rotate-secret, the function registry, and AWS's error for a missing
rotator."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from typing import Any

import pytest

from coffer.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def cli(gw: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    full = [*argv, "--profile", str(gw.profile)]
    code = await asyncio.to_thread(main, full, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_rotation_via_cli(stack: Any) -> None:
    code, out, err = await cli(
        stack, "secretsmanager", "create-secret", "--name", "db/app", "--secret-string", "s3cret"
    )
    assert code == 0, err
    arn = json.loads(out)["ARN"]

    code, out, err = await cli(stack, "secretsmanager", "rotate-secret", "--secret-id", "db/app")
    assert (code, out) == (254, "")
    assert err.strip() == (
        "An error occurred (InvalidRequestException) when calling the RotateSecret operation: "
        "No Lambda rotation function ARN is associated with this secret."
    )

    code, out, err = await cli(
        stack,
        "secretsmanager",
        "rotate-secret",
        "--secret-id",
        "db/app",
        "--rotation-lambda-arn",
        "random-value",
        "--rotation-rules",
        "AutomaticallyAfterDays=1",
    )
    assert code == 0, err
    rotated = json.loads(out)
    assert rotated["ARN"] == arn and rotated["Name"] == "db/app" and len(rotated["VersionId"]) == 36
    token = rotated["VersionId"]

    code, out, err = await cli(stack, "secretsmanager", "describe-secret", "--secret-id", "db/app")
    assert code == 0, err
    desc = json.loads(out)
    assert desc["RotationEnabled"] is True
    assert desc["RotationLambdaARN"] == "random-value"
    assert desc["RotationRules"] == {"AutomaticallyAfterDays": 1}
    assert dt.datetime.fromisoformat(desc["NextRotationDate"]).tzinfo is not None  # ISO 8601
    assert "LastRotatedDate" not in desc
    assert desc["VersionIdsToStages"][token] == ["AWSPENDING"]

    code, out, err = await cli(stack, "rotation", "history", "--secret-id", "db/app")
    assert code == 0, err
    history = json.loads(out)
    assert history["ARN"] == arn and history["Name"] == "db/app"
    (attempt,) = history["Attempts"]
    assert attempt["VersionId"] == token and attempt["Status"] == "Pending"
    assert attempt["Rotator"] == "random-value" and attempt["RotateImmediately"] is True

    code, out, err = await cli(stack, "secretsmanager", "cancel-rotate-secret", "--secret-id", "db/app")
    assert code == 0, err
    assert json.loads(out) == {"ARN": arn, "Name": "db/app", "VersionId": token}
    code, out, err = await cli(stack, "secretsmanager", "describe-secret", "--secret-id", arn)
    desc = json.loads(out)
    assert desc["RotationEnabled"] is False and desc["RotationRules"] == {"AutomaticallyAfterDays": 1}
    code, out, err = await cli(stack, "rotation", "history", "--secret-id", arn)
    assert [a["Status"] for a in json.loads(out)["Attempts"]] == ["Cancelled"]

    code, out, err = await cli(stack, "rotation", "history", "--secret-id", "db/missing")
    assert code == 254 and "ResourceNotFoundException" in err


async def test_json_rotation_rules_and_function_registry(stack: Any) -> None:
    code, out, err = await cli(
        stack,
        "secretsmanager",
        "register-rotation-function",
        "--name",
        "custom",
        "--function-endpoint",
        "127.0.0.1:9",
        "--ca-pem",
        "",
    )
    assert code == 0, err
    fn_arn = json.loads(out)["Function"]["ARN"]
    assert fn_arn == "arn:aws:lambda:local-1:000000000000:function:custom"
    code, out, err = await cli(
        stack, "secretsmanager", "create-secret", "--name", "db/other", "--secret-string", "x"
    )
    assert code == 0, err
    code, out, err = await cli(
        stack,
        "secretsmanager",
        "rotate-secret",
        "--secret-id",
        "db/other",
        "--rotation-lambda-arn",
        fn_arn,
        "--rotation-rules",
        json.dumps({"ScheduleExpression": "cron(0 4 ? * SUN *)", "Duration": "3h"}),
        "--no-rotate-immediately",
    )
    assert code == 0, err
    code, out, err = await cli(stack, "secretsmanager", "describe-secret", "--secret-id", "db/other")
    desc = json.loads(out)
    assert desc["RotationRules"] == {"ScheduleExpression": "cron(0 4 ? * SUN *)", "Duration": "3h"}
    assert desc["RotationLambdaARN"] == fn_arn
    code, out, err = await cli(stack, "secretsmanager", "list-rotation-functions")
    assert [f["Name"] for f in json.loads(out)["Functions"]] == ["custom"]
    code, out, err = await cli(
        stack,
        "secretsmanager",
        "rotate-secret",
        "--secret-id",
        "db/other",
        "--rotation-rules",
        "ScheduleExpression=rate(1 hours)",
    )
    assert code == 254 and "InvalidParameterException" in err
