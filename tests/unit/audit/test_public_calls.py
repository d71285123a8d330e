"""The public-call side of the audit trail (``coffer.audit_trail``): events built from requests and
responses (values left out, identifiers kept, bounded), which calls are public, and the group commit."""

from __future__ import annotations

import asyncio

import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.audit_trail import (
    RESOURCE_NAME_LIMIT,
    Batcher,
    PartialFailure,
    PublicAudit,
    build_event,
    is_read_only,
)
from coffer.core import errors
from coffer.core.audit_event import AuditEvent
from coffer.core.principal import legacy_principal


class _Trail:
    async def record(self, event: AuditEvent) -> None:
        pass


def test_a_write_keeps_identifiers_and_drops_the_value() -> None:
    event = build_event(
        event_source="secretsmanager.amazonaws.com",
        event_name="PutSecretValue",
        region="local-1",
        caller=legacy_principal("user/admin"),
        request=sm.PutSecretValueRequest(secret_id="app/db", secret_string="hunter2"),
        response=sm.PutSecretValueResponse(arn="arn:x", name="app/db", version_id="v1"),
        error=None,
        request_id="r1",
        source_ip=None,
    )
    record = event.to_record()
    assert record["requestParameters"] == {"secretId": "app/db"}
    assert record["responseElements"] == {"arn": "arn:x", "name": "app/db", "versionId": "v1"}
    assert record["readOnly"] is False and record["sourceIPAddress"] == "coffer.internal"
    assert record["resources"] == [
        {"ARN": "arn:x", "accountId": "000000000000", "type": "AWS::SecretsManager::Secret"}
    ]
    assert b"hunter2" not in event.canonical()


def test_a_read_has_no_response_elements_and_a_failure_its_error() -> None:
    ok = build_event(
        event_source="kms.amazonaws.com",
        event_name="Decrypt",
        region="r",
        caller=None,
        request=kms_pb2.DecryptRequest(ciphertext_blob=b"c"),
        response=kms_pb2.DecryptResponse(key_id="k", plaintext=b"secret"),
        error=None,
        request_id="r",
    ).to_record()
    assert ok["responseElements"] is None and ok["readOnly"] is True
    assert ok["userIdentity"]["type"] == "Unknown"
    denied = build_event(
        event_source="secretsmanager.amazonaws.com",
        event_name="GetSecretValue",
        region="r",
        caller=legacy_principal("user/x"),
        request=sm.GetSecretValueRequest(secret_id="a"),
        response=None,
        error=errors.AccessDenied("no"),
        request_id="r",
    ).to_record()
    assert denied["errorCode"] == "AccessDenied" and denied["errorMessage"] == "no"


def test_long_values_are_bounded() -> None:
    event = build_event(
        event_source="secretsmanager.amazonaws.com",
        event_name="DescribeSecret",
        region="r",
        caller=None,
        request=sm.DescribeSecretRequest(secret_id="n" * 100_000),
        response=None,
        error=None,
        request_id="r",
    )
    assert len(event.canonical()) < 10_000
    assert len(event.resources[0].arn) < RESOURCE_NAME_LIMIT + 20


def test_read_only_names() -> None:
    assert is_read_only("GetSecretValue") and is_read_only("ListKeys") and is_read_only("Encrypt")
    assert not is_read_only("PutSecretValue") and not is_read_only("OperatorUnseal")


def test_public_calls_are_the_gateways_calls_to_the_listed_services() -> None:
    audit = PublicAudit(trail=_Trail(), sources={"a.S": "s.amazonaws.com"}, region="r")
    assert audit.source_of("/a.S/M", "gateway") == "s.amazonaws.com"
    assert audit.source_of("/a.S/M", "store") is None
    assert audit.source_of("/b.T/M", "gateway") is None
    refusals = PublicAudit(trail=_Trail(), sources={"a.S": "s"}, region="r", unadmitted_only=True)
    assert refusals.source_of("/a.S/M", None, admitted=False) == "s"
    assert refusals.source_of("/a.S/M", None, admitted=True) is None


async def test_group_commit_flushes_queued_items_together_and_fails_them_together() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> None:
        batches.append(items)
        await gate.wait()
        if 13 in items:
            raise errors.Unavailable("down")

    batcher: Batcher[int] = Batcher(flush, name="t")
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 13)]
    await asyncio.sleep(0)
    gate.set()
    await first
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert batches == [[0], [1, 2, 13]]
    assert all(isinstance(r, errors.Unavailable) for r in results)
    await batcher.aclose()


async def test_a_partial_failure_fails_only_its_items() -> None:
    async def flush(items: list[int]) -> None:
        raise PartialFailure([errors.Unavailable("bad") if i == 2 else None for i in items])

    batcher: Batcher[int] = Batcher(flush, name="t")
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3)), return_exceptions=True)
    assert results[0] is None and results[2] is None and isinstance(results[1], errors.Unavailable)
    await batcher.aclose()
    with pytest.raises(errors.Unavailable):
        await batcher.submit(4)
