"""SQL of replication. Primary side: replica regions of a secret, the metadata snapshot a replicated
change carries in its outbox row, and the replicator's outbox reads, cursors and acknowledgements. Replica
side: the statements that apply a received change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from coffer.core.changes import MAX_DETAIL, REPLICATION_STATUS_CHANGED
from coffer.store import snapshot as snapshot_columns
from coffer.store.records import StoredValue
from coffer.store.snapshot import SecretSnapshot
from coffer.store.sql.common import REPLICATION_OUTBOX_LOCK, Reads, Statements
from coffer.store.sql.listing import refresh_terms


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row to ship to a peer region, with that region's replication settings."""

    id: int
    secret_id: int
    secret_arn: str
    change_seq: int
    event: str
    version_id: str | None
    payload: Mapping[str, Any]
    committed_at: datetime
    #: None: the region was removed from this secret's replication by this change.
    since_seq: int | None
    kms_key_id: str | None
    force_overwrite: bool

    @property
    def removed(self) -> bool:
        return self.since_seq is None

    @property
    def seed(self) -> bool:
        return self.since_seq == self.change_seq


@dataclass(frozen=True, slots=True)
class VersionRow:
    version_id: str
    created_at: datetime
    stored: StoredValue | None


@dataclass(frozen=True, slots=True)
class Ack:
    secret_id: int
    seq: int
    ok: bool
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicaHead:
    id: int
    arn: str
    name: str
    is_replica: bool
    primary_region: str | None
    change_seq: int
    kms_key_id: str | None
    #: An operator allowed a peer region's force-overwrite to replace this secret.
    overwritable: bool = False


# A replicated secret's change: the same, plus a metadata snapshot after the change (never a value) in the
# payload, so the replicator can ship each change as it was even when later changes followed.
_SNAPSHOT_COLUMNS = ", ".join(f"'{c}', b.{c}" for c in snapshot_columns.COLUMNS)


def _assign(column: str, param: int) -> str:
    if column in snapshot_columns.KEPT_WHEN_ABSENT:
        return f"{column} = COALESCE(${param}, {column})"
    if column in snapshot_columns.JSON_COLUMNS:
        return f"{column} = ${param}::jsonb"
    return f"{column} = ${param}"


# A replica takes the primary's metadata as the snapshot has it ($1 = id, $2 = seq, $3/$4 = its own key).
_UPDATE_REPLICA_SQL = (
    "UPDATE store.secrets SET change_seq = $2, kms_key_id = $3, kms_key_arn = $4, "
    + ", ".join(_assign(c, i) for i, c in enumerate(snapshot_columns.COLUMNS, start=5))
    + " WHERE id = $1"
)

RECORD_REPLICATED_SQL = f"""
WITH bumped AS (
    UPDATE store.secrets SET change_seq = change_seq + 1, last_changed_at = $5
    WHERE id = $1 RETURNING *
),
snap AS (
    SELECT b.id, b.arn, b.change_seq, jsonb_build_object(
        'name', b.name, {_SNAPSHOT_COLUMNS},
        'labels', COALESCE((SELECT jsonb_object_agg(l.label, l.version_id) FROM store.labels l
                            WHERE l.secret_id = b.id), '{{}}'::jsonb),
        'versions', COALESCE((SELECT jsonb_agg(v.version_id ORDER BY v.created_at, v.ordinal)
                              FROM store.versions v WHERE v.secret_id = b.id), '[]'::jsonb)
    ) AS snapshot
    FROM bumped b
),
ob AS (
    INSERT INTO store.outbox (secret_id, secret_arn, change_seq, event, version_id, payload, created_at)
    SELECT id, arn, change_seq, $2, $3, $4::jsonb || jsonb_build_object('snapshot', snapshot), $5 FROM snap
    RETURNING secret_arn
),
ev AS (
    SELECT store.append_secret_event(id, account_id, arn, name, $6, $3, $7, $5) AS appended FROM bumped
)
SELECT pg_notify('coffer_store_changed', secret_arn) FROM ob, ev
"""


async def _status_events(conn: asyncpg.Connection, changed: Sequence[tuple[int, str]], now: datetime) -> None:
    """A ReplicationStatusChanged change stream event per (secret id, detail)."""
    if changed:
        await conn.execute(
            "SELECT store.append_secret_event(s.id, s.account_id, s.arn, s.name, $3, NULL, left(t.d, $4), $5)"
            " FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS t(i, d, n)"
            " JOIN store.secrets s ON s.id = t.i ORDER BY t.n",
            [c[0] for c in changed],
            [c[1] for c in changed],
            REPLICATION_STATUS_CHANGED,
            MAX_DETAIL,
            now,
        )


_PENDING_SQL = """
SELECT o.id, o.secret_id, o.secret_arn, o.change_seq, o.event, o.version_id, o.payload, o.committed_at,
       r.since_seq, r.kms_key_id, COALESCE(r.force_overwrite, false) AS force_overwrite
FROM store.outbox o
LEFT JOIN store.replication_status r ON r.secret_id = o.secret_id AND r.region = $1
WHERE o.id > $2 AND o.id <= $4 AND o.payload ? 'snapshot'
  AND ((r.region IS NOT NULL AND NOT r.blocked AND o.change_seq >= r.since_seq)
       OR (r.region IS NULL AND (o.payload -> 'removed') ? $1))
ORDER BY o.id
LIMIT $3
"""


class ReplicationStatements(Statements):
    """Replication statements inside one write transaction (primary and replica side)."""

    async def put_replica_status(
        self,
        secret_id: int,
        *,
        region: str,
        kms_key_id: str | None,
        since_seq: int,
        force: bool,
        status: str,
        message: str | None,
        blocked: bool,
        now: datetime,
    ) -> None:
        """(Re)start replication to ``region``; the secret becomes a primary (PrimaryRegion = its region)."""
        await self._conn.execute(
            "INSERT INTO store.replication_status (secret_id, region, kms_key_id, status, status_message,"
            " updated_at, since_seq, synced_seq, force_overwrite, blocked)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)"
            " ON CONFLICT (secret_id, region) DO UPDATE SET kms_key_id = EXCLUDED.kms_key_id,"
            " status = EXCLUDED.status, status_message = EXCLUDED.status_message,"
            " updated_at = EXCLUDED.updated_at, since_seq = EXCLUDED.since_seq, synced_seq = 0,"
            " force_overwrite = EXCLUDED.force_overwrite, blocked = EXCLUDED.blocked",
            secret_id,
            region,
            kms_key_id,
            status,
            message,
            now,
            since_seq,
            force,
            blocked,
        )
        await self._conn.execute(
            "UPDATE store.secrets SET primary_region = region WHERE id = $1 AND primary_region IS NULL",
            secret_id,
        )
        self._replicated.add(secret_id)

    async def reseed_replicas(self, secret_id: int, regions: Sequence[str], *, since_seq: int) -> list[str]:
        """Ship the secret to ``regions`` again from change ``since_seq`` on (that change carries every
        version: a seed). Returns the regions that were replicated and not blocked."""
        rows = await self._conn.fetch(
            "UPDATE store.replication_status SET since_seq = $3 WHERE secret_id = $1"
            " AND region = ANY($2::text[]) AND NOT blocked RETURNING region",
            secret_id,
            list(regions),
            since_seq,
        )
        if rows:
            self._replicated.add(secret_id)
        return [r["region"] for r in rows]

    async def change_seq(self, secret_id: int) -> int:
        value: int = await self._conn.fetchval(
            "SELECT change_seq FROM store.secrets WHERE id = $1", secret_id
        )
        return value

    async def drop_replica_status(self, secret_id: int, regions: Sequence[str]) -> None:
        await self._conn.execute(
            "DELETE FROM store.replication_status WHERE secret_id = $1 AND region = ANY($2::text[])",
            secret_id,
            list(regions),
        )

    async def head_by_arn(self, arn: str) -> ReplicaHead | None:
        return _head(
            await self._conn.fetchrow(
                "SELECT id, arn, name, is_replica, primary_region, change_seq, kms_key_id"
                " FROM store.secrets WHERE arn = $1 FOR UPDATE",
                arn,
            )
        )

    async def head_by_name(self, name: str, account: str) -> ReplicaHead | None:
        return _head(
            await self._conn.fetchrow(
                "SELECT id, arn, name, is_replica, primary_region, change_seq, kms_key_id,"
                " replication_overwritable FROM store.secrets WHERE account_id = $1 AND name = $2 FOR UPDATE",
                account,
                name,
            )
        )

    async def insert_replica(
        self, *, arn: str, name: str, region: str, primary_region: str, created_at: datetime
    ) -> int:
        value: int = await self._conn.fetchval(
            "INSERT INTO store.secrets (arn, name, region, primary_region, is_replica, created_at,"
            " last_changed_at) VALUES ($1, $2, $3, $4, true, $5, $5) RETURNING id",
            arn,
            name,
            region,
            primary_region,
            created_at,
        )
        return value

    async def update_replica(
        self,
        secret_id: int,
        *,
        seq: int,
        snapshot: SecretSnapshot,
        kms_key_id: str | None,
        kms_key_arn: str | None,
    ) -> None:
        """Set a replica's metadata to the snapshot of change ``seq``."""
        await self._conn.execute(
            _UPDATE_REPLICA_SQL, secret_id, seq, kms_key_id, kms_key_arn, *snapshot.column_values()
        )
        await refresh_terms(self._conn, secret_id)

    async def promote(self, secret_id: int) -> None:
        """StopReplicationToReplica: a standalone secret from now on."""
        await self._conn.execute(
            "UPDATE store.secrets SET is_replica = false, primary_region = NULL WHERE id = $1", secret_id
        )

    async def version_states(self, secret_id: int) -> dict[str, bool]:
        """version id -> has a value."""
        rows = await self._conn.fetch(
            "SELECT version_id, value_kind IS NOT NULL AS has_value FROM store.versions WHERE secret_id = $1",
            secret_id,
        )
        return {r["version_id"]: r["has_value"] for r in rows}

    async def labels(self, secret_id: int) -> dict[str, str]:
        rows = await self._conn.fetch(
            "SELECT label, version_id FROM store.labels WHERE secret_id = $1", secret_id
        )
        return {r["label"]: r["version_id"] for r in rows}


def _head(row: asyncpg.Record | None) -> ReplicaHead | None:
    if row is None:
        return None
    return ReplicaHead(
        id=row["id"],
        arn=row["arn"],
        name=row["name"],
        is_replica=row["is_replica"],
        primary_region=row["primary_region"],
        change_seq=row["change_seq"],
        kms_key_id=row["kms_key_id"],
        overwritable=row.get("replication_overwritable", False),
    )


class ReplicationReads(Reads):
    """The replicator's reads and bookkeeping (primary side)."""

    async def cursor(self, region: str) -> int:
        await self._pool.execute(
            "INSERT INTO store.replication_peers (region) VALUES ($1) ON CONFLICT DO NOTHING", region
        )
        value: int = await self._pool.fetchval(
            "SELECT last_outbox FROM store.replication_peers WHERE region = $1", region
        )
        return value

    async def pending(self, region: str, *, after: int, limit: int) -> tuple[list[OutboxRow], int]:
        """Up to ``limit`` rows for ``region`` after outbox id ``after``, and how far this read is complete
        (the cursor may move there even past rows that are not for this region). Taken under the replicated
        outbox lock: no replicated change is between taking its outbox id and committing meanwhile, so
        every id up to the current maximum is final."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", REPLICATION_OUTBOX_LOCK)
            high: int = await conn.fetchval("SELECT COALESCE(max(id), 0) FROM store.outbox")
            rows = await conn.fetch(_PENDING_SQL, region, after, limit, high)
        found = [
            OutboxRow(
                id=r["id"],
                secret_id=r["secret_id"],
                secret_arn=r["secret_arn"],
                change_seq=r["change_seq"],
                event=r["event"],
                version_id=r["version_id"],
                payload=r["payload"],
                committed_at=r["committed_at"],
                since_seq=r["since_seq"],
                kms_key_id=r["kms_key_id"],
                force_overwrite=r["force_overwrite"],
            )
            for r in rows
        ]
        return found, (found[-1].id if len(found) >= limit else max(high, after))

    async def advance(self, region: str, cursor: int, *, now: datetime) -> None:
        await self._pool.execute(
            "UPDATE store.replication_peers SET last_outbox = GREATEST(last_outbox, $2), updated_at = $3"
            " WHERE region = $1",
            region,
            cursor,
            now,
        )

    async def versions(self, secret_id: int, version_ids: Sequence[str]) -> dict[str, VersionRow]:
        rows = await self._pool.fetch(
            "SELECT version_id, created_at, value_kind, ciphertext, wrapped_key FROM store.versions"
            " WHERE secret_id = $1 AND version_id = ANY($2::text[])",
            secret_id,
            list(version_ids),
        )
        out: dict[str, VersionRow] = {}
        for r in rows:
            stored = (
                StoredValue(
                    version_id=r["version_id"],
                    kind=r["value_kind"],
                    ciphertext=r["ciphertext"],
                    wrapped_key=r["wrapped_key"],
                )
                if r["value_kind"] is not None
                else None
            )
            out[r["version_id"]] = VersionRow(
                version_id=r["version_id"], created_at=r["created_at"], stored=stored
            )
        return out

    async def acknowledge(self, region: str, acks: Sequence[Ack], *, cursor: int, now: datetime) -> None:
        """Record what the peer applied or refused, and move the peer's cursor, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            changed: list[tuple[int, str]] = []
            for ack in acks:
                if ack.ok:
                    row = await conn.fetchrow(
                        "WITH old AS (SELECT status FROM store.replication_status"
                        " WHERE secret_id = $1 AND region = $2)"
                        " UPDATE store.replication_status r SET synced_seq = GREATEST(r.synced_seq, $3),"
                        " status = CASE WHEN GREATEST(r.synced_seq, $3) >= s.change_seq THEN 'InSync'"
                        " ELSE 'InProgress' END, status_message = NULL, updated_at = $4"
                        " FROM store.secrets s WHERE s.id = r.secret_id AND r.secret_id = $1"
                        " AND r.region = $2 AND NOT r.blocked"
                        " RETURNING r.status, (SELECT status FROM old) AS was",
                        ack.secret_id,
                        region,
                        ack.seq,
                        now,
                    )
                    if row is not None and row["status"] != row["was"]:
                        changed.append((ack.secret_id, f"{region}: {row['status']}"))
                else:
                    await conn.execute(
                        "UPDATE store.replication_status SET status = 'Failed', status_message = $3,"
                        " blocked = true, updated_at = $4 WHERE secret_id = $1 AND region = $2",
                        ack.secret_id,
                        region,
                        ack.message,
                        now,
                    )
                    changed.append((ack.secret_id, f"{region}: Failed: {ack.message or ''}"))
            # Last, after every row this transaction locks: the change stream's lock is always the last
            # one a transaction takes (no other transaction waits for it while holding one of these rows).
            await _status_events(conn, changed, now)
            await conn.execute(
                "UPDATE store.replication_peers SET last_outbox = GREATEST(last_outbox, $2), updated_at = $3"
                " WHERE region = $1",
                region,
                cursor,
                now,
            )

    async def mark_unreachable(
        self, region: str, secret_ids: Sequence[int], *, message: str, now: datetime
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "WITH old AS (SELECT secret_id, status FROM store.replication_status"
                " WHERE region = $1 AND secret_id = ANY($2::bigint[]))"
                " UPDATE store.replication_status r SET status = 'Failed', status_message = $3,"
                " updated_at = $4 FROM old WHERE old.secret_id = r.secret_id AND r.region = $1"
                " AND NOT r.blocked RETURNING r.secret_id, old.status AS was",
                region,
                list(secret_ids),
                message,
                now,
            )
            await _status_events(
                conn,
                [(r["secret_id"], f"{region}: Failed: {message}") for r in rows if r["was"] != "Failed"],
                now,
            )

    async def detach(self, primary_arn: str, region: str) -> bool:
        """The replica in ``region`` was promoted: stop replicating there. False if unknown."""
        status: str = await self._pool.execute(
            "DELETE FROM store.replication_status r USING store.secrets s"
            " WHERE s.id = r.secret_id AND s.arn = $1 AND r.region = $2",
            primary_arn,
            region,
        )
        return status != "DELETE 0"
