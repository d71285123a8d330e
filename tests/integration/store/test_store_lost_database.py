"""A failure that is the world's fault says so: when the store's PostgreSQL connection is killed in the middle
of a call, the caller gets UNAVAILABLE (retryable, ``ServiceUnavailable``), not INTERNAL, and the next call
works again on a fresh connection."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.rpc.status import error_info_of

from .conftest import StoreStack


async def _wait_for_blocked_backend(stack: StoreStack) -> int:
    """The pid of the store's backend waiting on our row lock (the call is then in flight)."""
    for _ in range(200):
        pid = await stack.db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the store's call never reached the locked row")


async def test_a_database_connection_killed_mid_call_answers_unavailable_and_the_next_call_works(
    stack: StoreStack,
) -> None:
    created = await stack.store.CreateSecret(
        pb.CreateSecretRequest(name="app/db", client_request_token=str(uuid.uuid4()), secret_string="v1")
    )
    hold = stack.db.transaction()
    await hold.start()
    await stack.db.execute("SELECT 1 FROM store.secrets WHERE arn = $1 FOR UPDATE", created.arn)
    put = asyncio.ensure_future(
        stack.raw.PutSecretValue(
            pb.PutSecretValueRequest(
                secret_id=created.arn, client_request_token=str(uuid.uuid4()), secret_string="v2"
            ),
            timeout=30,
        )
    )
    try:
        pid = await _wait_for_blocked_backend(stack)
        assert await stack.db.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await put
    finally:
        await hold.rollback()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    reason = error_info_of(info.value)
    assert reason is not None and reason.reason == "ServiceUnavailable"
    assert "PostgreSQL" in (info.value.details() or "")

    again = await stack.raw.PutSecretValue(
        pb.PutSecretValueRequest(
            secret_id=created.arn, client_request_token=str(uuid.uuid4()), secret_string="v2"
        ),
        timeout=30,
    )
    assert again.arn == created.arn
    read = await stack.raw.GetSecretValue(pb.GetSecretValueRequest(secret_id=created.arn), timeout=30)
    assert read.secret_string == "v2"
