"""Secrets through the real gateway → real store → real kms (PostgreSQL): the async and sync SDKs round-trip
create/get/put, the `coffer secretsmanager` command works in-process (output in the AWS shape, errors with
the AWS name and exit 254), each call leaves one audit line without the value, and `coffer status` sees the
three services."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import uuid
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from coffer.cli.main import main
from coffer.client import AsyncCofferClient, CofferClient
from coffer.core import errors

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def cli(gw: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, [*argv, "--profile", str(gw.profile)], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_async_sdk_round_trip(stack: Any) -> None:
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as client:
        created = await client.create_secret(name="app/db", secret_string='{"password": "one"}')
        assert created.name == "app/db" and created.arn.startswith(
            "arn:aws:secretsmanager:local-1:000000000000:"
        )
        assert str(uuid.UUID(created.version_id)) == created.version_id  # the auto-filled token
        got = await client.get_secret_value(secret_id="app/db")
        assert got.secret_string == '{"password": "one"}' and list(got.version_stages) == ["AWSCURRENT"]

        put = await client.put_secret_value(secret_id=created.arn, secret_string='{"password": "two"}')
        assert put.version_id != created.version_id and list(put.version_stages) == ["AWSCURRENT"]
        current = await client.get_secret_value(secret_id="app/db")
        previous = await client.get_secret_value(secret_id="app/db", version_stage="AWSPREVIOUS")
        assert (current.secret_string, current.version_id) == ('{"password": "two"}', put.version_id)
        assert (previous.secret_string, previous.version_id) == ('{"password": "one"}', created.version_id)

        with pytest.raises(errors.NotFound) as info:
            await client.get_secret_value(secret_id="app/missing")
        assert info.value.code == "ResourceNotFoundException"


async def test_sync_sdk_round_trip(stack: Any) -> None:
    def scenario() -> tuple[str, str, list[str]]:
        with CofferClient(stack.endpoint, stack.ca_file, stack.credentials) as client:
            client.create_secret(name="sync/one", secret_binary=b"\x00\x01\x02")
            client.put_secret_value(secret_id="sync/one", secret_binary=b"\x03")
            got = client.get_secret_value(secret_id="sync/one")
            described = client.describe_secret(secret_id="sync/one")
            stages = sorted(s for v in described.version_ids_to_stages.values() for s in v.stages)
            return got.secret_binary.hex(), got.name, stages

    assert await asyncio.to_thread(scenario) == ("03", "sync/one", ["AWSCURRENT", "AWSPREVIOUS"])


async def test_cli_create_get_and_error(stack: Any) -> None:
    code, out, err = await cli(
        stack, "secretsmanager", "create-secret", "--name", "db/prod", "--secret-string", '{"user": "app"}',
        "--tags", "Key=team,Value=pay",
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert set(created) == {"ARN", "Name", "VersionId"} and created["Name"] == "db/prod"

    code, out, err = await cli(stack, "secretsmanager", "get-secret-value", "--secret-id", "db/prod")
    assert code == 0, err
    got = json.loads(out)
    assert got["SecretString"] == '{"user": "app"}' and got["VersionStages"] == ["AWSCURRENT"]
    assert got["ARN"] == created["ARN"] and got["VersionId"] == created["VersionId"]
    assert "SecretBinary" not in got
    assert dt.datetime.fromisoformat(got["CreatedDate"]).tzinfo is not None  # ISO 8601, as the AWS CLI

    code, out, err = await cli(stack, "secretsmanager", "describe-secret", "--secret-id", "db/prod")
    assert code == 0, err
    described = json.loads(out)
    assert described["VersionIdsToStages"] == {created["VersionId"]: ["AWSCURRENT"]}
    assert described["Tags"] == [{"Key": "team", "Value": "pay"}]
    assert "RotationEnabled" not in described and "DeletedDate" not in described

    code, out, err = await cli(
        stack,
        "secretsmanager",
        "get-secret-value",
        "--secret-id",
        "db/prod",
        "--version-stage",
        "AWSPREVIOUS",
    )
    assert code == 254 and out == ""
    assert err.startswith(
        "An error occurred (ResourceNotFoundException) when calling the GetSecretValue operation: "
        "Secrets Manager can't find the specified secret value for staging label: AWSPREVIOUS"
    )

    code, out, err = await cli(stack, "secretsmanager", "list-secrets", "--filters", "Key=name,Values=db/")
    assert code == 0, err
    assert [s["Name"] for s in json.loads(out)["SecretList"]] == ["db/prod"]


async def test_each_call_is_audited_without_values(stack: Any) -> None:
    value = f"canary-{uuid.uuid4().hex}"
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as client:
            await client.create_secret(name="audit/x", secret_string=value)
            await client.get_secret_value(secret_id="audit/x")
            with pytest.raises(errors.NotFound):
                await client.get_secret_value(secret_id="audit/none")
            await client.get_random_password()
    # the gateway's lines (the store's and the kms's own lines for the calls they serve name their peer)
    audit = [e for e in logs if e.get("event") == "audit" and "peer" not in e]
    assert [(e["action"], e["resource"], e["outcome"]) for e in audit] == [
        ("secretsmanager:CreateSecret", "audit/x", "allowed"),
        ("secretsmanager:GetSecretValue", "audit/x", "allowed"),
        ("secretsmanager:GetSecretValue", "audit/none", "failed"),
        ("secretsmanager:GetRandomPassword", "*", "allowed"),
    ]
    admin_arn = "arn:aws:iam::000000000000:user/admin"
    assert all(e["principal"] == admin_arn and e["request_id"] for e in audit)
    # the store's own lines name the same caller (the principal the gateway's assertion carries)
    store_lines = [
        e for e in logs if e.get("event") == "audit" and "SecretStoreService" in e.get("action", "")
    ]
    assert store_lines and all(e["principal"] == admin_arn for e in store_lines)
    assert audit[2]["error_code"] == "ResourceNotFoundException"
    assert len({e["request_id"] for e in audit}) == 4
    assert value not in repr(logs) and stack.credentials.secret_access_key not in repr(logs)


async def test_status_with_store_and_kms(stack: Any) -> None:
    code, out, err = await cli(stack, "status")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["gateway", "store", "kms"]
