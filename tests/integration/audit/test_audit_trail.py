"""The audit trail through a real stack (client → gateway → store/kms, PostgreSQL): one event per public
call (allowed, denied, failed; store calls, kms calls via Append, the gateway's own answers and refusals),
stored before the response leaves and without any secret value; LookupEvents' filters and pages; a trail
that cannot be written fails the call UNAVAILABLE; ``coffer audit verify`` passes on an intact trail and
names the event after a record is edited, a row deleted, two rows' seq swapped."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.audit.v1 import audit_pb2, audit_pb2_grpc
from coffer.client import Credentials
from coffer.core import errors
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles

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


async def test_lookup_filters_and_pages_newest_first(audit_stack: AuditStack) -> None:
    stack = audit_stack
    async with stack.client() as client:
        arns = [(await client.create_secret(name=f"app/s{i}", secret_string="v")).arn for i in range(5)]
        await client.describe_secret(secret_id="app/s0")
        audit = client.audit
        # pages of 2, newest first, until no NextToken
        names: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await audit.lookup_events(
                lookup_attributes=attr("EventName", "CreateSecret"), max_results=2, next_token=token
            )
            pages += 1
            names += [json.loads(e.cloud_trail_event)["requestParameters"]["name"] for e in page.events]
            token = page.next_token
            if not token:
                break
        assert pages == 3 and names == [f"app/s{i}" for i in reversed(range(5))]
        # a token works only with the parameters of the first call, and only untampered
        first = await audit.lookup_events(lookup_attributes=attr("EventName", "CreateSecret"), max_results=2)
        with pytest.raises(errors.InvalidNextToken):
            await audit.lookup_events(
                lookup_attributes=attr("EventName", "DescribeSecret"),
                max_results=2,
                next_token=first.next_token,
            )
        with pytest.raises(errors.InvalidNextToken):
            await audit.lookup_events(
                lookup_attributes=attr("EventName", "CreateSecret"),
                max_results=2,
                next_token=first.next_token[:-2] + ("AA" if not first.next_token.endswith("AA") else "BB"),
            )
        # the other attributes
        by_resource = await audit.lookup_events(lookup_attributes=attr("ResourceName", arns[0]))
        assert {e.event_name for e in by_resource.events} == {"CreateSecret", "DescribeSecret"}
        reads = await audit.lookup_events(lookup_attributes=attr("ReadOnly", "true"))
        assert reads.events and all(e.read_only == "true" for e in reads.events)
        assert "DescribeSecret" in {e.event_name for e in reads.events}
        by_user = await audit.lookup_events(lookup_attributes=attr("Username", "admin"))
        assert len(by_user.events) >= 6
        one = by_user.events[0]
        by_id = await audit.lookup_events(lookup_attributes=attr("EventId", one.event_id))
        assert [e.event_id for e in by_id.events] == [one.event_id]
        by_type = await audit.lookup_events(
            lookup_attributes=attr("ResourceType", "AWS::SecretsManager::Secret")
        )
        assert len(by_type.events) >= 6
        # a time range
        when = one.event_time.ToDatetime()
        later = await audit.call(
            "LookupEvents",
            audit_pb2.LookupEventsRequest(start_time=one.event_time, end_time=one.event_time),
        )
        assert isinstance(later, audit_pb2.LookupEventsResponse)
        assert later.events and all(e.event_time.ToDatetime() == when for e in later.events)
        # refused requests, with AWS's error names
        with pytest.raises(errors.CofferError) as bad_key:
            await audit.lookup_events(lookup_attributes=attr("Color", "blue"))
        assert bad_key.value.code == "InvalidLookupAttributesException"
        with pytest.raises(errors.CofferError) as two:
            await audit.lookup_events(lookup_attributes=attr("EventName", "A") + attr("Username", "B"))
        assert two.value.code == "InvalidLookupAttributesException"
        with pytest.raises(errors.CofferError) as too_many:
            await audit.lookup_events(max_results=51)
        assert too_many.value.code == "InvalidMaxResultsException"
        with pytest.raises(errors.CofferError) as backwards:
            await audit.call(
                "LookupEvents",
                audit_pb2.LookupEventsRequest(
                    start_time=Timestamp(seconds=2_000_000_000), end_time=Timestamp(seconds=1_000_000_000)
                ),
            )
        assert backwards.value.code == "InvalidTimeRangeException"


async def test_each_event_is_committed_before_the_response(audit_stack: AuditStack) -> None:
    stack = audit_stack
    async with stack.client() as client:
        await client.create_secret(name="app/x", secret_string="v")
        for n in range(1, 4):
            await client.get_secret_value(secret_id="app/x")
            rows = await stack.sql(
                "SELECT count(*) AS n FROM store.audit_events WHERE event_name = 'GetSecretValue'"
            )
            assert rows[0]["n"] == n


async def test_a_trail_that_cannot_be_written_fails_the_call_unavailable(audit_stack: AuditStack) -> None:
    stack = audit_stack
    async with stack.client() as client:
        await client.create_secret(name="app/x", secret_string=CANARY)
        role = (await stack.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_events'"))[0][0]
        await stack.sql(f'REVOKE INSERT ON store.audit_events FROM "{role}"')
        with pytest.raises(errors.Unavailable) as refused:
            await client.get_secret_value(secret_id="app/x")
        assert CANARY not in str(refused.value) and CANARY not in refused.value.message
        with pytest.raises(errors.Unavailable):
            await client.put_secret_value(secret_id="app/x", secret_string="other")
        before = await stack.sql("SELECT count(*) AS n FROM store.audit_events")
        await stack.sql(f'GRANT INSERT ON store.audit_events TO "{role}"')
        got = await client.get_secret_value(secret_id="app/x")
        assert got.secret_string in (CANARY, "other")
        after = await stack.sql("SELECT count(*) AS n FROM store.audit_events")
        assert after[0]["n"] == before[0]["n"] + 1


async def test_kms_calls_arrive_through_append(audit_stack: AuditStack) -> None:
    stack = audit_stack
    async with stack.client() as client:
        key = await client.kms.create_key(description="audit")
        enc = await client.kms.encrypt(key_id=key.key_metadata.key_id, plaintext=CANARY.encode())
        dec = await client.kms.decrypt(ciphertext_blob=enc.ciphertext_blob)
        assert dec.plaintext == CANARY.encode()
        page = await client.audit.lookup_events(lookup_attributes=attr("EventSource", "kms.amazonaws.com"))
    assert [e.event_name for e in page.events] == ["Decrypt", "Encrypt", "CreateKey"]
    record = json.loads(page.events[1].cloud_trail_event)
    assert record["requestParameters"]["keyId"] == key.key_metadata.key_id
    assert "plaintext" not in record["requestParameters"]
    rows = await stack.sql("SELECT record FROM store.audit_events")
    encoded = base64.b64encode(CANARY.encode()).decode()
    assert not [r for r in rows if CANARY in r["record"] or encoded in r["record"]]


async def _make_trail(stack: AuditStack) -> None:
    async with stack.client() as client:
        await client.create_secret(name="app/v", secret_string="v")
        for _ in range(4):
            await client.get_secret_value(secret_id="app/v")


async def _verify(stack: AuditStack) -> tuple[int, str]:
    code, out, err = await stack.cli("audit", "verify")
    return code, out + err


async def test_verify_passes_on_an_intact_trail(audit_stack: AuditStack, tmp_path: Any) -> None:
    await _make_trail(audit_stack)
    code, out = await _verify(audit_stack)
    assert code == 0 and out.startswith("OK: "), out
    # again, with the public key exported earlier, after more events (sealed by a second digest)
    async with audit_stack.client() as client:
        pem = (await client.audit.get_digest_public_key()).public_key_pem
        await client.describe_secret(secret_id="app/v")
    key_file = tmp_path / "audit.pub"
    key_file.write_text(pem)
    code, out, err = await audit_stack.cli("audit", "verify", "--public-key", str(key_file))
    assert code == 0 and "2 digests" in out, out + err


async def _event_at(stack: AuditStack, seq: int) -> str:
    return str((await stack.sql("SELECT event_id FROM store.audit_events WHERE seq = $1", seq))[0][0])


async def test_verify_names_an_edited_record(audit_stack: AuditStack) -> None:
    await _make_trail(audit_stack)
    victim = await _event_at(audit_stack, 3)
    await audit_stack.sql(
        "UPDATE store.audit_events SET record = replace(record, '\"readOnly\":true', '\"readOnly\":false') "
        "WHERE seq = 3"
    )
    code, out = await _verify(audit_stack)
    assert code == 1 and "modified" in out and victim in out, out


async def test_verify_names_a_deleted_row(audit_stack: AuditStack) -> None:
    await _make_trail(audit_stack)
    await audit_stack.sql("DELETE FROM store.audit_events WHERE seq = 3")
    code, out = await _verify(audit_stack)
    assert code == 1 and "deleted" in out and "seq 3" in out, out


async def test_verify_names_reordered_rows(audit_stack: AuditStack) -> None:
    await _make_trail(audit_stack)
    moved = {await _event_at(audit_stack, 2), await _event_at(audit_stack, 4)}
    for step in ("seq = 1000 WHERE seq = 2", "seq = 2 WHERE seq = 4", "seq = 4 WHERE seq = 1000"):
        await audit_stack.sql(f"UPDATE store.audit_events SET {step}")
    code, out = await _verify(audit_stack)
    assert code == 1 and "reordered" in out and any(m in out for m in moved), out


async def test_verify_names_an_edited_digest(audit_stack: AuditStack) -> None:
    await _make_trail(audit_stack)
    code, out = await _verify(audit_stack)  # seals a first digest
    assert code == 0, out
    await audit_stack.sql(
        "UPDATE store.audit_digests SET body = replace(body, '\"eventCount\":', '\"eventCount\":1') "
        "WHERE digest_no = 1"
    )
    code, out = await _verify(audit_stack)
    assert code == 1 and "digest_signature" in out, out


@pytest.mark.parametrize("identity", ["rotation", "store"])
async def test_only_the_gateway_and_the_kms_may_append(audit_stack: AuditStack, identity: str) -> None:
    store = audit_stack.services.store
    assert store is not None
    channel = secure_channel(
        f"127.0.0.1:{store.port}",
        TlsFiles.for_identity(audit_stack.services.pki_dir, identity),
        server_name="store",
    )
    try:
        with pytest.raises(errors.AccessDenied):
            await audit_pb2_grpc.AuditIngestServiceStub(channel).Append(
                audit_pb2.AppendRequest(records=["{}"])
            )
    finally:
        await channel.close()
    assert not await audit_stack.sql("SELECT 1 FROM store.audit_events WHERE record = '{}'")


async def test_the_gateway_records_the_calls_it_refuses_before_authenticating(
    audit_stack: AuditStack,
) -> None:
    forged = Credentials("AKIA" + "Q" * 16, "not-a-real-secret-key")  # no such access key
    async with audit_stack.client(forged) as client:
        with pytest.raises(errors.CofferError) as refused:
            await client.get_secret_value(secret_id="app/db")
    rows = await audit_stack.sql(
        "SELECT event_name, event_source, account_id, record FROM store.audit_events WHERE error_code = $1",
        refused.value.code,
    )
    assert len(rows) == 1 and rows[0]["event_name"] == "GetSecretValue"
    record = json.loads(rows[0]["record"])
    assert record["userIdentity"]["type"] == "Unknown" and record["requestParameters"] == {
        "secretId": "app/db"
    }
    assert "not-a-real-secret-key" not in rows[0]["record"]
