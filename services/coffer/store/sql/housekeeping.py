"""SQL of the store's housekeeping: trimming the outbox and the rotation attempt history, which would
otherwise grow with every change and every rotation.

Outbox: a row is needed only until every configured peer region acknowledged it (its cursor in
``store.replication_peers`` passed it); such rows are deleted once they are older than a grace period. Rows
beyond a cap (the newest ``max_rows`` are kept) are deleted even when a peer has not acknowledged them (a peer
down for long must not grow the table without bound): each replica in such a lagging region that was not in
sync is then re-seeded (a new change whose outbox row carries every version and the full metadata, exactly
what adding the region does), so it converges anyway. A region REMOVED from a secret's replication whose
removal row was dropped unshipped keeps its (no longer updated) replica; that is logged.

Rotation attempts: at most ``keep`` finished attempts per secret (the newest); open ones are never deleted.

Role sessions (``ASIA…`` keys from STS AssumeRole): deleted once they expired more than a grace period ago."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from coffer.store.sql.common import REPLICATION_OUTBOX_LOCK, Reads


@dataclass(frozen=True, slots=True)
class OutboxTrim:
    #: Rows every peer had acknowledged.
    acknowledged: int = 0
    #: Rows dropped by the cap, some of them not acknowledged by ``lagging`` regions.
    capped: int = 0
    lagging: tuple[str, ...] = ()
    #: (secret id, secret ARN, region): replicas to re-seed because rows they missed were dropped.
    resync: tuple[tuple[int, str, str], ...] = field(default=())
    #: Regions whose removal (the replica there to be deleted) was dropped before it was shipped.
    lost_removals: tuple[tuple[str, str], ...] = field(default=())


class HousekeepingReads(Reads):
    async def trim_outbox(self, peers: Sequence[str], *, max_rows: int, keep_seconds: float) -> OutboxTrim:
        """Delete acknowledged rows committed more than ``keep_seconds`` ago (wall clock, as committed_at),
        then every row beyond the newest ``max_rows``; returns what the caller must re-seed. Under the
        replicated outbox lock (no row is between taking its id and committing)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", REPLICATION_OUTBOX_LOCK)
            acked: int | None = await conn.fetchval(
                "SELECT CASE WHEN cardinality($1::text[]) = 0 THEN (SELECT max(id) FROM store.outbox)"
                " ELSE (SELECT min(COALESCE(p.last_outbox, 0)) FROM unnest($1::text[]) AS r(region)"
                " LEFT JOIN store.replication_peers p ON p.region = r.region) END",
                list(peers),
            )
            acknowledged = 0
            if acked:
                status = await conn.execute(
                    "DELETE FROM store.outbox WHERE id <= $1"
                    " AND committed_at < clock_timestamp() - make_interval(secs => $2)",
                    acked,
                    keep_seconds,
                )
                acknowledged = int(status.split()[-1])
            cutoff: int | None = await conn.fetchval(
                "SELECT id FROM store.outbox ORDER BY id DESC OFFSET $1 LIMIT 1", max_rows
            )
            if cutoff is None:
                return OutboxTrim(acknowledged=acknowledged)
            lagging = [
                r["region"]
                for r in await conn.fetch(
                    "SELECT r.region FROM unnest($1::text[]) AS r(region)"
                    " LEFT JOIN store.replication_peers p ON p.region = r.region"
                    " WHERE COALESCE(p.last_outbox, 0) < $2",
                    list(peers),
                    cutoff,
                )
            ]
            lost = await conn.fetch(
                "SELECT DISTINCT o.secret_arn, x.region FROM store.outbox o"
                " CROSS JOIN LATERAL jsonb_array_elements_text(o.payload -> 'removed') AS x(region)"
                " LEFT JOIN store.replication_peers p ON p.region = x.region"
                " WHERE o.id <= $1 AND jsonb_typeof(o.payload -> 'removed') = 'array'"
                " AND x.region = ANY($2::text[]) AND o.id > COALESCE(p.last_outbox, 0)",
                cutoff,
                lagging,
            )
            status = await conn.execute("DELETE FROM store.outbox WHERE id <= $1", cutoff)
            resync = await conn.fetch(
                "SELECT r.secret_id, s.arn, r.region FROM store.replication_status r"
                " JOIN store.secrets s ON s.id = r.secret_id"
                " WHERE r.region = ANY($1::text[]) AND NOT r.blocked AND r.synced_seq < s.change_seq"
                " ORDER BY r.secret_id, r.region",
                lagging,
            )
        return OutboxTrim(
            acknowledged=acknowledged,
            capped=int(status.split()[-1]),
            lagging=tuple(lagging),
            resync=tuple((r["secret_id"], r["arn"], r["region"]) for r in resync),
            lost_removals=tuple((r["secret_arn"], r["region"]) for r in lost),
        )

    async def trim_attempts(self, *, keep: int) -> int:
        """Delete the finished rotation attempts of each secret beyond its newest ``keep`` (their steps
        cascade). Returns how many were deleted."""
        status: str = await self._pool.execute(
            "DELETE FROM store.rotation_attempts a USING ("
            "  SELECT id, row_number() OVER (PARTITION BY secret_id ORDER BY finished_at DESC, id DESC) AS n"
            "  FROM store.rotation_attempts WHERE status IN ('Succeeded', 'Failed', 'Cancelled')"
            ") old WHERE a.id = old.id AND old.n > $1",
            keep,
        )
        return int(status.split()[-1])

    async def delete_expired_sessions(self, *, expired_before: dt.datetime, limit: int = 10000) -> int:
        """Delete role sessions (access keys with an expiry) that expired before ``expired_before``, at most
        ``limit`` per call. Returns how many were deleted. (An expired session is refused whether its row is
        there or not; the rows would otherwise pile up, one per AssumeRole.)"""
        status: str = await self._pool.execute(
            "DELETE FROM store.iam_access_keys WHERE access_key_id IN ("
            "  SELECT access_key_id FROM store.iam_access_keys"
            "  WHERE expires_at IS NOT NULL AND expires_at < $1 LIMIT $2)",
            expired_before,
            limit,
        )
        return int(status.split()[-1])
