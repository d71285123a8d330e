"""The audit trail through a real stack (client → gateway → store/kms, PostgreSQL): one event per public
call (allowed, denied, failed; store calls, kms calls via Append, the gateway's own answers and refusals),
stored before the response leaves and without any secret value; LookupEvents' filters and pages; a trail
that cannot be written fails the call UNAVAILABLE; ``coffer audit verify`` passes on an intact trail and
names the event after a record is edited, a row deleted, two rows' seq swapped."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coffer.api.audit.v1 import audit_pb2
from coffer.core import errors

from .conftest import AuditStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CANARY = "canary-Zq8vX2-never-in-the-trail"


def attr(key: str, value: str) -> list[audit_pb2.LookupAttribute]:
    return [audit_pb2.LookupAttribute(attribute_key=key, attribute_value=value)]


async def events_named(stack: AuditStack, name: str) -> list[Any]:
    async with stack.client() as client:
        page = await client.audit.lookup_events(lookup_attributes=attr("EventName", name))
    return list(page.events)


async def test_calls_are_recorded_with_their_fields_and_never_a_secret_value(audit_stack: AuditStack) -> None:
    stack = audit_stack
    async with stack.client() as client:
        created = await client.create_secret(name="app/db", secret_string=CANARY)
        got = await client.get_secret_value(secret_id="app/db")
        assert got.secret_string == CANARY
        await client.put_secret_value(secret_id="app/db", secret_string=CANARY + "-2")
        with pytest.raises(errors.NotFound):
            await client.get_secret_value(secret_id="no/such/secret")
        password = (await client.get_random_password(password_length=40)).random_password
    # denied by the gateway: an operator-only action by a principal that is not an operator
    async with stack.client(stack.outsider) as client:
        with pytest.raises(errors.AccessDenied):
            await client.call("RegisterRotationFunction", name="f")

    gets = await events_named(stack, "GetSecretValue")
    assert len(gets) == 2
    missing, found = gets  # newest first
    record = json.loads(found.cloud_trail_event)
    assert found.event_source == "secretsmanager.amazonaws.com" and found.read_only == "true"
    assert record["eventName"] == "GetSecretValue" and record["readOnly"] is True
    assert record["requestParameters"] == {"secretId": "app/db"}
    assert record["responseElements"] is None and "errorCode" not in record
    assert record["userIdentity"]["arn"].endswith(":user/admin")
    assert record["userIdentity"]["accountId"] == "000000000000"
    assert record["eventID"] == found.event_id and record["requestID"]
    assert [r.resource_name for r in found.resources] == [created.arn]
    failed = json.loads(missing.cloud_trail_event)
    assert failed["errorCode"] == "ResourceNotFoundException" and failed["errorMessage"]

    [put] = await events_named(stack, "PutSecretValue")
    put_record = json.loads(put.cloud_trail_event)
    assert put.read_only == "false"
    assert (
        put_record["responseElements"]["arn"] == created.arn and put_record["responseElements"]["versionId"]
    )
    assert "secretString" not in put_record["requestParameters"]
    assert put_record["requestParameters"]["secretId"] == "app/db"

    [denied] = await events_named(stack, "RegisterRotationFunction")
    denied_record = json.loads(denied.cloud_trail_event)
    assert denied_record["errorCode"] == "AccessDenied"
    assert denied_record["userIdentity"]["arn"].endswith(":user/outsider")

    [pw] = await events_named(stack, "GetRandomPassword")
    assert json.loads(pw.cloud_trail_event)["requestParameters"] == {
        "passwordLength": "40"
    }  # proto3 JSON: int64 as a string

    # No value anywhere in the stored trail (the canary, the generated password).
    rows = await stack.sql("SELECT record FROM store.audit_events")
    assert rows and not [r for r in rows if CANARY in r["record"] or password in r["record"]]
