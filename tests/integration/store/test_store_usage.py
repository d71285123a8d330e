"""Metering through the real store (PostgreSQL, mTLS, gateway-signed principals): public calls are counted
per operation (whatever their outcome), secrets' storage is prorated by the hour in SQL and matches the
reference arithmetic of ``coffer.core.usage``, a purged secret stops counting at its deletion date, and
GetUsage is decided (coffer:GetUsage) and validated."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.api.usage.v1 import usage_pb2
from coffer.core import errors
from coffer.core.usage import parse_month, span_hours

from .conftest import ACCOUNT, StoreStack
from .signed_clients import Clients, acting_as, signed_clients

pytestmark = pytest.mark.integration

ADMIN = "user/admin"
NOBODY = f"arn:aws:iam::{ACCOUNT}:user/nobody"  # no identity policy


@pytest.fixture
async def clients(stack: StoreStack) -> AsyncIterator[Clients]:
    async with signed_clients(stack) as c:
        yield c


async def _usage(c: Clients, month: str) -> usage_pb2.GetUsageResponse:
    response: usage_pb2.GetUsageResponse = await c.usage.GetUsage(usage_pb2.GetUsageRequest(month=month))
    return response


async def test_calls_and_secret_months(stack: StoreStack, clients: Clients) -> None:
    t0 = stack.clock.now()
    month = parse_month(t0.strftime("%Y-%m"))
    with acting_as(ADMIN):
        for name in ("u/a", "u/b", "u/c"):
            await clients.store.CreateSecret(
                pb.CreateSecretRequest(name=name, client_request_token=str(uuid.uuid4()), secret_string="v")
            )
        await clients.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="u/a"))
        await clients.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="u/b"))
        with pytest.raises(errors.NotFound):  # failed calls are calls too
            await clients.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="u/missing"))
        await clients.store.DeleteSecret(pb.DeleteSecretRequest(secret_id="u/c", recovery_window_in_days=7))

        stack.clock.advance(timedelta(hours=2, minutes=30))
        usage = await _usage(clients, month.text)
        assert usage.account_id == ACCOUNT and usage.month == month.text
        assert {c.operation: c.count for c in usage.api_calls} == {
            "CreateSecret": 3,
            "DeleteSecret": 1,
            "GetSecretValue": 3,
        }
        assert usage.total_api_calls == 7
        now = stack.clock.now()
        hours = 3 * span_hours(t0, None, month, now)  # 2 h 30 min → 3 hours each (if still in t0's month)
        assert usage.secret_hours == hours
        assert usage.hours_in_month == month.hours
        assert usage.secret_months == pytest.approx(hours / month.hours)
        assert usage.primary_secret_months == pytest.approx(hours / month.hours)
        assert usage.replica_secret_months == 0

        # the secret pending deletion is purged after its window: it counts until its deletion date
        stack.clock.advance(timedelta(days=8))
        assert len(await stack.store_runtime.purge_now()) == 1
        now = stack.clock.now()
        usage = await _usage(clients, month.text)
        expected = 2 * span_hours(t0, None, month, now) + span_hours(t0, t0 + timedelta(days=7), month, now)
        assert usage.secret_hours == expected
        # GetUsage itself is not a Secrets Manager call
        assert usage.total_api_calls == 7
        # another month: nothing (before), or only the storage (after)
        assert (await _usage(clients, "1999-01")).secret_hours == 0
        with pytest.raises(errors.CofferError) as info:
            await _usage(clients, "2026-13")
        assert info.value.code == "ValidationException"
    with acting_as(NOBODY), pytest.raises(errors.AccessDenied):
        await _usage(clients, month.text)
