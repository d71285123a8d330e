"""Metering in the store (issue 9): public call counts and SecretMonths per account and month, and
``coffer.api.usage.v1.UsageService/GetUsage``.

* :class:`UsageMeter` counts the public Secrets Manager calls the store serves (forwarded by the gateway) in
  memory, per (account, month, operation), and adds them to ``store.usage_calls`` in batches (every
  ``interval`` seconds, on GetUsage, and at shutdown). :class:`MeteringAudit` feeds it from the server's
  one-line-per-call audit hook, so every public call is counted whatever its outcome, without touching the
  use cases.
* Storage spans (``store.usage_secret_spans``) are opened and closed by triggers on ``store.secrets``
  (migration 0008); GetUsage prorates them by the hour in SQL, like ``coffer.core.usage``.
* GetUsage is decided with ``authorize(caller, "coffer:GetUsage", …)`` on the caller's own account and
  answers for that account only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg
import grpc

from coffer import logs
from coffer.api.usage.v1 import usage_pb2, usage_pb2_grpc
from coffer.audit import AuditSink, Outcome
from coffer.clock import Clock
from coffer.core import errors
from coffer.core.authorize import authorize
from coffer.core.principal import legacy_principal
from coffer.core.usage import Month, month_of, parse_month
from coffer.loops import cancel_and_wait, run_forever
from coffer.rpc.context import current_caller

log = logs.get_logger("coffer.store.usage")

SERVICE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"]
SERVICE_NAME = SERVICE.full_name
#: The store's service whose calls are the public Secrets Manager calls (forwarded by the gateway).
METERED_PREFIX = "/coffer.api.store.v1.SecretStoreService/"
METERED_PEER = "gateway"

_Key = tuple[str, str, str]  # account, month, operation


class UsageMeter:
    """Call counters in memory, added to ``store.usage_calls`` in batches."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, *, interval: float = 1.0) -> None:
        self._pool = pool
        self._clock = clock
        self._interval = interval
        self._pending: Counter[_Key] = Counter()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def count(self, account: str, operation: str) -> None:
        self._pending[(account, month_of(self._clock.now()), operation)] += 1

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    async def flush(self) -> int:
        """Add the pending counts to the table (one statement); returns how many calls were added. Counts
        that fail to be written are put back for the next round."""
        async with self._lock:
            if not self._pending:
                return 0
            batch, self._pending = self._pending, Counter()
            keys = list(batch)
            try:
                await self._pool.execute(
                    """
                    INSERT INTO store.usage_calls (account_id, month, operation, count)
                    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
                    ON CONFLICT (account_id, month, operation)
                    DO UPDATE SET count = store.usage_calls.count + EXCLUDED.count
                    """,
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [batch[k] for k in keys],
                )
            except BaseException:
                self._pending.update(batch)
                raise
            return sum(batch.values())

    def start(self) -> None:
        async def round_() -> None:
            await self.flush()

        self._task = asyncio.get_running_loop().create_task(
            run_forever(round_, name="store.usage_flush", interval=self._interval, logger=log),
            name="store-usage-flush",
        )

    async def aclose(self) -> None:
        await cancel_and_wait(self._task, logger=log)
        try:
            await self.flush()
        except Exception:
            log.exception("usage.final_flush_failed", lost=self.pending)


class MeteringAudit:
    """An audit sink that counts the public calls for metering, then hands the line to ``inner``."""

    def __init__(self, inner: AuditSink, meter: UsageMeter) -> None:
        self._inner = inner
        self._meter = meter

    def record(
        self,
        *,
        principal: str | None,
        action: str,
        resource: str,
        outcome: Outcome,
        request_id: str | None,
        error_code: str | None = None,
        peer: str | None = None,
    ) -> None:
        if peer == METERED_PEER and action.startswith(METERED_PREFIX):
            account = _account(principal)
            if account is not None:
                self._meter.count(account, action.removeprefix(METERED_PREFIX))
        self._inner.record(
            principal=principal,
            action=action,
            resource=resource,
            outcome=outcome,
            request_id=request_id,
            error_code=error_code,
            peer=peer,
        )


def _account(principal: str | None) -> str | None:
    caller = current_caller()
    if caller is not None:
        return caller.account
    return legacy_principal(principal).account if principal else None


_SPANS_SQL = """
SELECT s.is_replica,
       COALESCE(SUM(GREATEST(0, CEIL(EXTRACT(EPOCH FROM (
           LEAST(COALESCE(s.ended_at, $4), $4, $3) - GREATEST(s.started_at, $2)
       )) / 3600.0))), 0)::bigint AS hours
  FROM store.usage_secret_spans s
 WHERE s.account_id = $1 AND s.started_at < $3 AND (s.ended_at IS NULL OR s.ended_at > $2)
 GROUP BY s.is_replica
"""


async def usage_of(
    pool: asyncpg.Pool, account: str, month: Month, now: datetime
) -> usage_pb2.GetUsageResponse:
    """The account's usage in ``month`` (open spans counted up to ``now``), computed in SQL."""
    async with pool.acquire() as conn:
        calls = await conn.fetch(
            "SELECT operation, count FROM store.usage_calls WHERE account_id = $1 AND month = $2"
            ' ORDER BY operation COLLATE "C"',
            account,
            month.text,
        )
        spans = await conn.fetch(_SPANS_SQL, account, month.start, month.end, now)
    hours = {bool(r["is_replica"]): int(r["hours"]) for r in spans}
    primary, replica = hours.get(False, 0), hours.get(True, 0)
    return usage_pb2.GetUsageResponse(
        account_id=account,
        month=month.text,
        api_calls=[usage_pb2.OperationCalls(operation=r["operation"], count=r["count"]) for r in calls],
        total_api_calls=sum(int(r["count"]) for r in calls),
        secret_months=(primary + replica) / month.hours,
        primary_secret_months=primary / month.hours,
        replica_secret_months=replica / month.hours,
        secret_hours=primary + replica,
        hours_in_month=month.hours,
    )


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, pool: asyncpg.Pool, meter: UsageMeter, clock: Clock) -> None:
        self._pool = pool
        self._meter = meter
        self._clock = clock

    async def GetUsage(self, request: usage_pb2.GetUsageRequest, context: grpc.aio.ServicerContext) -> Any:
        month = parse_month(request.month)
        caller = current_caller()
        if caller is None:
            raise errors.AccessDenied("GetUsage needs an authenticated caller.")
        authorize(caller, "coffer:GetUsage", "*", resource_account=caller.account)
        await self._meter.flush()
        return await usage_of(self._pool, caller.account, month, self._clock.now())
