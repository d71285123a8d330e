"""All of the store's SQL (asyncpg, PostgreSQL schema ``store``).

Reads are single round trips. Writes happen inside :meth:`StoreRepository.transaction`, one transaction per
API call: the caller locks the secret row ``FOR UPDATE``, does its work through :class:`StoreTx`, and the
last statement (:meth:`StoreTx.record_change`) bumps the secret's change sequence, writes the outbox row and
``NOTIFY coffer_store_changed`` (delivered at commit). Any exception rolls everything back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from coffer import db
from coffer.core import errors
from coffer.core.arn import SecretRef
from coffer.core.listing import Listable
from coffer.core.model import ReplicationStatus, RotationRules, Secret, SecretVersion, Tag
from coffer.core.versions import versions_to_stages
from coffer.store.records import (
    AttemptRow,
    DueSecret,
    FunctionRow,
    LockedSecret,
    NameTaken,
    RotationConfig,
    SealedValue,
    StepRow,
    StoredValue,
    ValueRow,
    VersionMeta,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
CHANGED_CHANNEL = "coffer_store_changed"
ROTATION_CHANNEL = "coffer_rotation_requested"
_MIGRATION_LOCK = 0x636F6666_6572_01  # "coffer" + store

# The SecretId lookup every statement shares: exact ARN first, else the name ($1 = ARN or NULL, $2 = name).
_LOOKUP = "(s.arn = $1 OR s.name = $2) ORDER BY (s.arn = $1) DESC NULLS LAST LIMIT 1"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await db.create_pool(
        dsn, service="store", min_size=min_size, max_size=max_size, init=_init_connection
    )


async def apply_migrations(pool: asyncpg.Pool) -> list[str]:
    """Apply ``migrations/NNNN_*.sql`` not applied yet, in order, each in its own transaction, under an
    advisory lock (several store processes may start at once). Returns the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                "CREATE SCHEMA IF NOT EXISTS store;"
                "CREATE TABLE IF NOT EXISTS store.schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM store.schema_migrations")}
            for path in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")):
                if path.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute("INSERT INTO store.schema_migrations (name) VALUES ($1)", path.name)
                applied_now.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


def _tags(raw: Any) -> tuple[Tag, ...] | None:
    if raw is None:
        return None
    return tuple(Tag(key=t["Key"], value=t["Value"]) for t in raw)


def tags_json(tags: Sequence[Tag] | None) -> list[dict[str, str]] | None:
    if tags is None:
        return None
    return [{"Key": t.key, "Value": t.value} for t in tags]


def _rules(raw: Any) -> RotationRules | None:
    if raw is None:
        return None
    return RotationRules(
        automatically_after_days=raw.get("AutomaticallyAfterDays"),
        duration=raw.get("Duration"),
        schedule_expression=raw.get("ScheduleExpression"),
    )


def _date(raw: Any) -> date | None:
    return raw if isinstance(raw, date) else None


_SECRET_COLUMNS = """
    s.id, s.arn, s.name, s.type, s.description, s.kms_key_id, s.owning_service, s.tags, s.primary_region,
    s.created_at, s.last_changed_at, s.last_accessed_on, s.deleted_at, s.deletion_date,
    s.rotation_enabled, s.rotation_lambda_arn, s.rotation_rules, s.last_rotated_at, s.next_rotation_at,
    ARRAY(SELECT l.label FROM store.labels l WHERE l.secret_id = s.id ORDER BY l.label) AS label_names,
    ARRAY(SELECT l.version_id FROM store.labels l WHERE l.secret_id = s.id ORDER BY l.label)
        AS label_versions,
    (SELECT jsonb_agg(jsonb_build_object(
        'region', r.region, 'kms_key_id', r.kms_key_id,
        'status', CASE WHEN r.status = 'InSync' AND r.synced_seq < s.change_seq THEN 'InProgress'
                       ELSE r.status END,
        'status_message', r.status_message, 'last_accessed_on', r.last_accessed_on) ORDER BY r.region)
     FROM store.replication_status r WHERE r.secret_id = s.id) AS replication
"""


def _secret(row: asyncpg.Record) -> Secret:
    labels = dict(zip(row["label_names"], row["label_versions"], strict=True))
    replication = tuple(
        ReplicationStatus(
            region=r["region"],
            status=r["status"],
            kms_key_id=r["kms_key_id"],
            status_message=r["status_message"],
            last_accessed_date=date.fromisoformat(r["last_accessed_on"]) if r["last_accessed_on"] else None,
        )
        for r in (row["replication"] or [])
    )
    return Secret(
        arn=row["arn"],
        name=row["name"],
        created_date=row["created_at"],
        last_changed_date=row["last_changed_at"],
        type=row["type"],
        description=row["description"],
        kms_key_id=row["kms_key_id"],
        last_accessed_date=_date(row["last_accessed_on"]),
        deleted_date=row["deleted_at"],
        deletion_date=row["deletion_date"],
        rotation_enabled=row["rotation_enabled"],
        rotation_lambda_arn=row["rotation_lambda_arn"],
        rotation_rules=_rules(row["rotation_rules"]),
        last_rotated_date=row["last_rotated_at"],
        next_rotation_date=row["next_rotation_at"],
        tags=_tags(row["tags"]),
        owning_service=row["owning_service"],
        primary_region=row["primary_region"],
        replication_status=replication,
        version_ids_to_stages=versions_to_stages(labels),
    )


_GET_VALUE_SQL = f"""
WITH s AS (
    SELECT s.id, s.arn, s.name, s.deleted_at FROM store.secrets s WHERE {_LOOKUP}
),
holder AS (
    SELECT l.version_id FROM store.labels l JOIN s ON l.secret_id = s.id WHERE l.label = $4::text
),
v AS (
    SELECT ver.secret_id, ver.version_id, ver.created_at, ver.value_kind, ver.ciphertext, ver.wrapped_key
    FROM store.versions ver JOIN s ON ver.secret_id = s.id
    WHERE ver.version_id = COALESCE($3::text, (SELECT version_id FROM holder))
),
ok AS (
    SELECT 1 FROM s, v
    WHERE s.deleted_at IS NULL AND v.value_kind IS NOT NULL
      AND ($3::text IS NULL OR $4::text IS NULL OR (SELECT version_id FROM holder) = $3::text)
),
touch_secret AS (
    UPDATE store.secrets t SET last_accessed_on = $5
    FROM s WHERE t.id = s.id AND EXISTS (SELECT 1 FROM ok) AND t.last_accessed_on IS DISTINCT FROM $5
    RETURNING 1
),
touch_version AS (
    UPDATE store.versions t SET last_accessed_on = $5
    FROM v WHERE t.secret_id = v.secret_id AND t.version_id = v.version_id
      AND EXISTS (SELECT 1 FROM ok) AND t.last_accessed_on IS DISTINCT FROM $5
    RETURNING 1
)
SELECT s.id AS secret_id, s.arn, s.name, s.deleted_at IS NOT NULL AS deleted,
       (SELECT version_id FROM holder) AS stage_holder,
       v.version_id, v.created_at, v.value_kind, v.ciphertext, v.wrapped_key,
       ARRAY(SELECT l.label FROM store.labels l
             WHERE l.secret_id = s.id AND l.version_id = v.version_id ORDER BY l.label) AS stages,
       (SELECT count(*) FROM touch_secret) + (SELECT count(*) FROM touch_version) AS touched
FROM s LEFT JOIN v ON true
"""

_RECORD_CHANGE_SQL = """
WITH bumped AS (
    UPDATE store.secrets SET change_seq = change_seq + 1, last_changed_at = $5
    WHERE id = $1 RETURNING id, arn, change_seq
),
ob AS (
    INSERT INTO store.outbox (secret_id, secret_arn, change_seq, event, version_id, payload, created_at)
    SELECT id, arn, change_seq, $2, $3, $4::jsonb, $5 FROM bumped
    RETURNING secret_arn
)
SELECT pg_notify('coffer_store_changed', secret_arn) FROM ob
"""

# A replicated secret's change: the same, plus a metadata snapshot after the change (never a value) in the
# payload, so the replicator can ship each change as it was even when later changes followed.
_RECORD_REPLICATED_SQL = """
WITH bumped AS (
    UPDATE store.secrets SET change_seq = change_seq + 1, last_changed_at = $5
    WHERE id = $1 RETURNING *
),
snap AS (
    SELECT b.id, b.arn, b.change_seq, jsonb_build_object(
        'name', b.name, 'description', b.description, 'tags', b.tags,
        'rotation_enabled', b.rotation_enabled, 'rotation_lambda_arn', b.rotation_lambda_arn,
        'rotation_rules', b.rotation_rules, 'last_rotated_at', b.last_rotated_at,
        'next_rotation_at', b.next_rotation_at, 'created_at', b.created_at,
        'last_changed_at', b.last_changed_at, 'deleted_at', b.deleted_at, 'deletion_date', b.deletion_date,
        'labels', COALESCE((SELECT jsonb_object_agg(l.label, l.version_id) FROM store.labels l
                            WHERE l.secret_id = b.id), '{}'::jsonb),
        'versions', COALESCE((SELECT jsonb_agg(v.version_id ORDER BY v.created_at, v.ordinal)
                              FROM store.versions v WHERE v.secret_id = b.id), '[]'::jsonb)
    ) AS snapshot
    FROM bumped b
),
ob AS (
    INSERT INTO store.outbox (secret_id, secret_arn, change_seq, event, version_id, payload, created_at)
    SELECT id, arn, change_seq, $2, $3, $4::jsonb || jsonb_build_object('snapshot', snapshot), $5 FROM snap
    RETURNING secret_arn
)
SELECT pg_notify('coffer_store_changed', secret_arn) FROM ob
"""

#: Replicated changes take this transaction lock before their outbox row gets its id, so those rows commit
#: in id order and the replicator's per-peer cursor (an outbox id) never passes a row still in flight.
REPLICATION_OUTBOX_LOCK = 0x636F6666_6572_04

_PURGE_SQL = """
WITH gone AS (
    DELETE FROM store.secrets WHERE deletion_date IS NOT NULL AND deletion_date <= $1
    RETURNING id, arn, change_seq
),
ob AS (
    INSERT INTO store.outbox (secret_id, secret_arn, change_seq, event, payload, created_at)
    SELECT id, arn, change_seq + 1, 'PurgeSecret', '{}'::jsonb, $1 FROM gone
    RETURNING secret_arn
)
SELECT secret_arn, pg_notify('coffer_store_changed', secret_arn) FROM ob
"""

_UPDATABLE = frozenset(
    {"description", "kms_key_id", "kms_key_arn", "type", "tags", "deleted_at", "deletion_date"}
)
_ROTATION_UPDATABLE = frozenset(
    {
        "rotation_enabled",
        "rotation_lambda_arn",
        "rotation_rotator",
        "rotation_rules",
        "last_rotated_at",
        "next_rotation_at",
    }
)
_ATTEMPT_UPDATABLE = frozenset(
    {
        "status",
        "tries",
        "started_at",
        "finished_at",
        "next_try_at",
        "lease_owner",
        "lease_expires_at",
        "lease_seconds",
        "error",
    }
)
_ATTEMPT_COLUMNS = """
    a.id, a.secret_id, s.arn AS secret_arn, a.token, a.rotator, a.rotate_immediately, a.trigger, a.status,
    a.tries, a.requested_at, a.started_at, a.finished_at, a.next_try_at, a.lease_owner, a.lease_expires_at,
    a.lease_seconds, a.error
"""


def rules_json(rules: RotationRules | None) -> dict[str, Any] | None:
    if rules is None:
        return None
    out: dict[str, Any] = {}
    if rules.automatically_after_days is not None:
        out["AutomaticallyAfterDays"] = rules.automatically_after_days
    if rules.duration is not None:
        out["Duration"] = rules.duration
    if rules.schedule_expression is not None:
        out["ScheduleExpression"] = rules.schedule_expression
    return out


def _attempt(row: asyncpg.Record, steps: Sequence[StepRow] = ()) -> AttemptRow:
    return AttemptRow(
        id=row["id"],
        secret_id=row["secret_id"],
        secret_arn=row["secret_arn"],
        token=row["token"],
        rotator=row["rotator"],
        rotate_immediately=row["rotate_immediately"],
        trigger=row["trigger"],
        status=row["status"],
        tries=row["tries"],
        requested=row["requested_at"],
        started=row["started_at"],
        finished=row["finished_at"],
        next_try=row["next_try_at"],
        lease_owner=row["lease_owner"],
        lease_expires=row["lease_expires_at"],
        lease_seconds=row["lease_seconds"],
        error=row["error"],
        steps=tuple(steps),
    )


def _function(row: asyncpg.Record) -> FunctionRow:
    return FunctionRow(
        name=row["name"],
        arn=row["arn"],
        endpoint=row["endpoint"],
        ca_pem=row["ca_pem"],
        server_name=row["server_name"],
        created=row["created_at"],
    )


class StoreTx:
    """Statements available inside one write transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        #: Secrets locked in this transaction that have replica regions (their changes carry snapshots).
        self._replicated: set[int] = set()

    @property
    def conn(self) -> asyncpg.Connection:
        return self._conn

    def mark_replicated(self, secret_id: int) -> None:
        """This transaction's change of ``secret_id`` must ship to replica regions (see record_change)."""
        self._replicated.add(secret_id)

    async def _lock(self, where: str, *args: Any) -> LockedSecret | None:
        row = await self._conn.fetchrow(
            "SELECT s.id, s.arn, s.name, s.deleted_at IS NOT NULL AS deleted, s.is_replica, s.kms_key_id,"
            " s.tags, ARRAY(SELECT r.region FROM store.replication_status r WHERE r.secret_id = s.id"
            " ORDER BY r.region) AS replica_regions"
            f" FROM store.secrets s WHERE {where} FOR UPDATE",
            *args,
        )
        if row is None:
            return None
        versions = await self._conn.fetch(
            "SELECT version_id, created_at, value_kind IS NOT NULL AS has_value FROM store.versions"
            " WHERE secret_id = $1",
            row["id"],
        )
        labels = await self._conn.fetch(
            "SELECT label, version_id FROM store.labels WHERE secret_id = $1", row["id"]
        )
        if row["replica_regions"]:
            self._replicated.add(row["id"])
        return LockedSecret(
            id=row["id"],
            arn=row["arn"],
            name=row["name"],
            deleted=row["deleted"],
            is_replica=row["is_replica"],
            kms_key_id=row["kms_key_id"],
            tags=_tags(row["tags"]),
            replica_regions=tuple(row["replica_regions"]),
            versions={
                v["version_id"]: VersionMeta(created_date=v["created_at"], has_value=v["has_value"])
                for v in versions
            },
            labels={r["label"]: r["version_id"] for r in labels},
        )

    async def lock(self, ref: SecretRef) -> LockedSecret | None:
        return await self._lock(_LOOKUP, ref.arn, ref.name)

    async def lock_existing(self, ref: SecretRef) -> LockedSecret:
        """Lock the secret row ``FOR UPDATE``, or raise ResourceNotFoundException."""
        locked = await self.lock(ref)
        if locked is None:
            raise errors.NotFound()
        return locked

    async def lock_by_name(self, name: str) -> LockedSecret | None:
        return await self._lock("s.name = $1", name)

    async def insert_secret(
        self,
        *,
        arn: str,
        name: str,
        region: str,
        type: str | None,
        description: str | None,
        kms_key_id: str | None,
        kms_key_arn: str | None,
        tags: Sequence[Tag] | None,
        now: datetime,
    ) -> int:
        try:
            value: int = await self._conn.fetchval(
                "INSERT INTO store.secrets (arn, name, region, type, description, kms_key_id, kms_key_arn,"
                " tags, created_at, last_changed_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $9) RETURNING id",
                arn,
                name,
                region,
                type,
                description,
                kms_key_id,
                kms_key_arn,
                tags_json(tags),
                now,
            )
        except asyncpg.UniqueViolationError:
            raise NameTaken(f"The operation failed because the secret {name} already exists.") from None
        return value

    async def update_secret(self, secret_id: int, changes: Mapping[str, Any]) -> None:
        if not changes:
            return
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        cols = list(changes)
        assignments = ", ".join(
            f"{c} = ${i}::jsonb" if c == "tags" else f"{c} = ${i}" for i, c in enumerate(cols, start=2)
        )
        values = [tags_json(changes[c]) if c == "tags" else changes[c] for c in cols]
        await self._conn.execute(f"UPDATE store.secrets SET {assignments} WHERE id = $1", secret_id, *values)

    async def stored_values(self, secret_id: int, version_ids: Sequence[str]) -> list[StoredValue]:
        rows = await self._conn.fetch(
            "SELECT version_id, value_kind, ciphertext, wrapped_key FROM store.versions"
            " WHERE secret_id = $1 AND version_id = ANY($2::text[]) AND value_kind IS NOT NULL",
            secret_id,
            list(version_ids),
        )
        return [
            StoredValue(
                version_id=r["version_id"],
                kind=r["value_kind"],
                ciphertext=r["ciphertext"],
                wrapped_key=r["wrapped_key"],
            )
            for r in rows
        ]

    async def insert_version(
        self, secret_id: int, version_id: str, sealed: SealedValue, *, now: datetime
    ) -> None:
        await self._conn.execute(
            "INSERT INTO store.versions (secret_id, version_id, created_at, value_kind, ciphertext,"
            " wrapped_key, kms_key_arn, default_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            secret_id,
            version_id,
            now,
            sealed.kind,
            sealed.ciphertext,
            sealed.wrapped_key,
            sealed.kms_key_arn,
            sealed.default_key,
        )

    async def store_value(self, secret_id: int, version_id: str, sealed: SealedValue) -> None:
        """Fill a valueless placeholder, or replace a version's ciphertext (re-encryption under a new key)."""
        await self._conn.execute(
            "UPDATE store.versions SET value_kind = $3, ciphertext = $4, wrapped_key = $5, kms_key_arn = $6,"
            " default_key = $7 WHERE secret_id = $1 AND version_id = $2",
            secret_id,
            version_id,
            sealed.kind,
            sealed.ciphertext,
            sealed.wrapped_key,
            sealed.kms_key_arn,
            sealed.default_key,
        )

    async def replace_labels(self, secret_id: int, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        gone = [label for label in old if label not in new]
        changed = {label: vid for label, vid in new.items() if old.get(label) != vid}
        if gone:
            await self._conn.execute(
                "DELETE FROM store.labels WHERE secret_id = $1 AND label = ANY($2::text[])", secret_id, gone
            )
        if changed:
            await self._conn.execute(
                "INSERT INTO store.labels (secret_id, label, version_id)"
                " SELECT $1, l, v FROM unnest($2::text[], $3::text[]) AS t(l, v)"
                " ON CONFLICT (secret_id, label) DO UPDATE SET version_id = EXCLUDED.version_id",
                secret_id,
                list(changed),
                list(changed.values()),
            )

    async def delete_versions(self, secret_id: int, version_ids: Sequence[str]) -> None:
        if version_ids:
            await self._conn.execute(
                "DELETE FROM store.versions WHERE secret_id = $1 AND version_id = ANY($2::text[])",
                secret_id,
                list(version_ids),
            )

    async def delete_secret(self, secret_id: int) -> None:
        await self._conn.execute("DELETE FROM store.secrets WHERE id = $1", secret_id)

    async def record_change(
        self,
        secret_id: int,
        *,
        event: str,
        now: datetime,
        version_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        """Bump the change sequence and LastChangedDate, write the outbox row, NOTIFY (at commit). A secret
        with replica regions gets the outbox lock first and a metadata snapshot in its outbox row."""
        body = dict(payload or {})
        if secret_id in self._replicated:
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", REPLICATION_OUTBOX_LOCK)
            await self._conn.execute(_RECORD_REPLICATED_SQL, secret_id, event, version_id, body, now)
            return
        await self._conn.execute(_RECORD_CHANGE_SQL, secret_id, event, version_id, body, now)

    # --- replication (primary side) ---------------------------------------------------------------------

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

    # --- rotation ---------------------------------------------------------------------------------------

    async def lock_by_arn(self, arn: str) -> LockedSecret | None:
        return await self._lock("s.arn = $1", arn)

    async def rotation_config(self, secret_id: int) -> RotationConfig:
        row = await self._conn.fetchrow(
            "SELECT rotation_enabled, rotation_lambda_arn, rotation_rotator, rotation_rules, last_rotated_at,"
            " next_rotation_at FROM store.secrets WHERE id = $1",
            secret_id,
        )
        assert row is not None
        return RotationConfig(
            enabled=row["rotation_enabled"],
            lambda_arn=row["rotation_lambda_arn"],
            rotator=row["rotation_rotator"],
            rules=_rules(row["rotation_rules"]),
            last_rotated=row["last_rotated_at"],
            next_rotation=row["next_rotation_at"],
        )

    async def update_rotation(self, secret_id: int, changes: Mapping[str, Any]) -> None:
        """Set rotation columns (``rotation_rules`` takes a RotationRules or None)."""
        if not changes:
            return
        unknown = set(changes) - _ROTATION_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        cols = list(changes)
        assignments = ", ".join(
            f"{c} = ${i}::jsonb" if c == "rotation_rules" else f"{c} = ${i}"
            for i, c in enumerate(cols, start=2)
        )
        values = [rules_json(changes[c]) if c == "rotation_rules" else changes[c] for c in cols]
        await self._conn.execute(f"UPDATE store.secrets SET {assignments} WHERE id = $1", secret_id, *values)

    async def insert_placeholder(self, secret_id: int, version_id: str, *, now: datetime) -> None:
        """The valueless AWSPENDING version a rotation starts with (spec §6.2)."""
        await self._conn.execute(
            "INSERT INTO store.versions (secret_id, version_id, created_at) VALUES ($1, $2, $3)",
            secret_id,
            version_id,
            now,
        )

    async def open_attempt(self, secret_id: int) -> AttemptRow | None:
        row = await self._conn.fetchrow(
            f"SELECT {_ATTEMPT_COLUMNS} FROM store.rotation_attempts a JOIN store.secrets s"
            " ON s.id = a.secret_id WHERE a.secret_id = $1 AND a.status IN ('Pending', 'InProgress')"
            " FOR UPDATE OF a",
            secret_id,
        )
        return None if row is None else _attempt(row)

    async def attempt(self, arn: str, token: str) -> AttemptRow | None:
        row = await self._conn.fetchrow(
            f"SELECT {_ATTEMPT_COLUMNS} FROM store.rotation_attempts a JOIN store.secrets s"
            " ON s.id = a.secret_id WHERE s.arn = $1 AND a.token = $2 FOR UPDATE OF a",
            arn,
            token,
        )
        return None if row is None else _attempt(row)

    async def insert_attempt(
        self,
        secret_id: int,
        *,
        token: str,
        rotator: str,
        rotate_immediately: bool,
        trigger: str,
        now: datetime,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO store.rotation_attempts (secret_id, token, rotator, rotate_immediately, trigger,"
            " status, requested_at, next_try_at) VALUES ($1, $2, $3, $4, $5, 'Pending', $6, $6)",
            secret_id,
            token,
            rotator,
            rotate_immediately,
            trigger,
            now,
        )

    async def update_attempt(self, attempt_id: int, changes: Mapping[str, Any]) -> None:
        if not changes:
            return
        unknown = set(changes) - _ATTEMPT_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        cols = list(changes)
        assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(cols, start=2))
        await self._conn.execute(
            f"UPDATE store.rotation_attempts SET {assignments} WHERE id = $1",
            attempt_id,
            *[changes[c] for c in cols],
        )

    async def record_step(
        self,
        attempt_id: int,
        *,
        try_number: int,
        step: str,
        status: str,
        worker_id: str,
        error: str | None,
        now: datetime,
    ) -> None:
        if status == "started":
            await self._conn.execute(
                "INSERT INTO store.rotation_steps (attempt_id, try_number, step, status, worker_id,"
                " started_at) VALUES ($1, $2, $3, 'started', $4, $5)"
                " ON CONFLICT (attempt_id, try_number, step) DO UPDATE SET status = 'started',"
                " worker_id = EXCLUDED.worker_id, started_at = EXCLUDED.started_at, finished_at = NULL,"
                " error = NULL",
                attempt_id,
                try_number,
                step,
                worker_id,
                now,
            )
            return
        await self._conn.execute(
            "INSERT INTO store.rotation_steps (attempt_id, try_number, step, status, worker_id, started_at,"
            " finished_at, error) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)"
            " ON CONFLICT (attempt_id, try_number, step) DO UPDATE SET status = EXCLUDED.status,"
            " finished_at = EXCLUDED.finished_at, error = EXCLUDED.error",
            attempt_id,
            try_number,
            step,
            status,
            worker_id,
            now,
            error,
        )

    async def insert_function(
        self, *, name: str, arn: str, endpoint: str, ca_pem: str, server_name: str | None, now: datetime
    ) -> FunctionRow | None:
        """None when the name is taken."""
        row = await self._conn.fetchrow(
            "INSERT INTO store.rotation_functions (name, arn, endpoint, ca_pem, server_name, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING *",
            name,
            arn,
            endpoint,
            ca_pem,
            server_name,
            now,
        )
        return None if row is None else _function(row)

    async def delete_function(self, name: str) -> None:
        await self._conn.execute("DELETE FROM store.rotation_functions WHERE name = $1", name)

    async def function_users(self, arn: str) -> list[str]:
        """Names of secrets whose rotation uses the function (locks the function row first)."""
        await self._conn.execute("SELECT 1 FROM store.rotation_functions WHERE arn = $1 FOR UPDATE", arn)
        rows = await self._conn.fetch(
            "SELECT name FROM store.secrets WHERE rotation_rotator = $1 ORDER BY name", arn
        )
        return [r["name"] for r in rows]

    async def notify_rotation(self) -> None:
        """Wake the rotation scheduler (delivered at commit)."""
        await self._conn.execute("SELECT pg_notify($1, '')", ROTATION_CHANNEL)


class StoreRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield StoreTx(conn)

    async def fetch_value(
        self, ref: SecretRef, *, version_id: str | None, stage: str | None, today: date
    ) -> ValueRow | None:
        """GetSecretValue in one round trip: resolve the secret, find the version by id or label, and bump
        LastAccessedDate of secret and version (only when the request will succeed and the day changed)."""
        row = await self._pool.fetchrow(_GET_VALUE_SQL, ref.arn, ref.name, version_id, stage, today)
        if row is None:
            return None
        return ValueRow(
            secret_id=row["secret_id"],
            arn=row["arn"],
            name=row["name"],
            deleted=row["deleted"],
            stage_holder=row["stage_holder"],
            version_id=row["version_id"],
            created_date=row["created_at"],
            value_kind=row["value_kind"],
            ciphertext=row["ciphertext"],
            wrapped_key=row["wrapped_key"],
            stages=tuple(row["stages"]),
        )

    async def describe(self, ref: SecretRef) -> Secret | None:
        row = await self._pool.fetchrow(
            f"SELECT {_SECRET_COLUMNS} FROM store.secrets s WHERE {_LOOKUP}", ref.arn, ref.name
        )
        return None if row is None else _secret(row)

    async def secrets_by_ids(self, ids: Sequence[int]) -> dict[int, Secret]:
        rows = await self._pool.fetch(
            f"SELECT {_SECRET_COLUMNS} FROM store.secrets s WHERE s.id = ANY($1::bigint[])", list(ids)
        )
        return {r["id"]: _secret(r) for r in rows}

    async def listables(self, *, include_deleted: bool) -> list[Listable]:
        rows = await self._pool.fetch(
            "SELECT id, name, description, tags, owning_service, primary_region, created_at, last_changed_at,"
            " last_accessed_on FROM store.secrets WHERE $1 OR deleted_at IS NULL",
            include_deleted,
        )
        return [
            Listable(
                ident=r["id"],
                name=r["name"],
                created_date=r["created_at"],
                last_changed_date=r["last_changed_at"],
                description=r["description"],
                tags=_tags(r["tags"]),
                owning_service=r["owning_service"],
                primary_region=r["primary_region"],
                last_accessed_date=_date(r["last_accessed_on"]),
            )
            for r in rows
        ]

    async def versions(self, ref: SecretRef) -> tuple[str, str, list[SecretVersion]] | None:
        """(ARN, name, every version with a value, oldest first) - placeholders are left out."""
        head = await self._pool.fetchrow(
            f"SELECT s.id, s.arn, s.name FROM store.secrets s WHERE {_LOOKUP}", ref.arn, ref.name
        )
        if head is None:
            return None
        rows = await self._pool.fetch(
            "SELECT v.version_id, v.ordinal, v.created_at, v.last_accessed_on, v.kms_key_arn, v.default_key,"
            " ARRAY(SELECT l.label FROM store.labels l WHERE l.secret_id = v.secret_id"
            " AND l.version_id = v.version_id ORDER BY l.label) AS stages"
            " FROM store.versions v WHERE v.secret_id = $1 AND v.value_kind IS NOT NULL"
            " ORDER BY v.created_at, v.ordinal",
            head["id"],
        )
        versions = [
            SecretVersion(
                version_id=r["version_id"],
                created_date=r["created_at"],
                stages=tuple(r["stages"]),
                has_value=True,
                kms_key_arn=r["kms_key_arn"],
                default_key=r["default_key"],
                last_accessed_date=_date(r["last_accessed_on"]),
                ordinal=r["ordinal"],
            )
            for r in rows
        ]
        return head["arn"], head["name"], versions

    async def purge_due(self, now: datetime) -> list[str]:
        """Delete every secret whose recovery window has ended (versions and labels cascade), with an outbox
        row and a notification each, in one transaction. Returns the purged ARNs."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_PURGE_SQL, now)
        return [r["secret_arn"] for r in rows]

    # --- rotation ---------------------------------------------------------------------------------------

    async def secret_head(self, ref: SecretRef) -> tuple[int, str, str] | None:
        row = await self._pool.fetchrow(
            f"SELECT s.id, s.arn, s.name FROM store.secrets s WHERE {_LOOKUP}", ref.arn, ref.name
        )
        return None if row is None else (row["id"], row["arn"], row["name"])

    async def attempts(self, secret_id: int, *, limit: int, before_id: int | None) -> list[AttemptRow]:
        """A secret's attempts, newest first, with their steps."""
        rows = await self._pool.fetch(
            f"SELECT {_ATTEMPT_COLUMNS} FROM store.rotation_attempts a JOIN store.secrets s"
            " ON s.id = a.secret_id WHERE a.secret_id = $1 AND ($2::bigint IS NULL OR a.id < $2)"
            " ORDER BY a.id DESC LIMIT $3",
            secret_id,
            before_id,
            limit,
        )
        steps = await self._pool.fetch(
            "SELECT attempt_id, try_number, step, status, started_at, finished_at, error"
            " FROM store.rotation_steps WHERE attempt_id = ANY($1::bigint[])"
            " ORDER BY attempt_id, try_number, started_at",
            [r["id"] for r in rows],
        )
        by_attempt: dict[int, list[StepRow]] = {}
        for st in steps:
            by_attempt.setdefault(st["attempt_id"], []).append(
                StepRow(
                    step=st["step"],
                    status=st["status"],
                    try_number=st["try_number"],
                    started=st["started_at"],
                    finished=st["finished_at"],
                    error=st["error"],
                )
            )
        return [_attempt(r, by_attempt.get(r["id"], ())) for r in rows]

    async def due_secrets(self, now: datetime, *, limit: int) -> list[DueSecret]:
        """Rotation-enabled live secrets whose NextRotationDate has come and that have no unfinished
        attempt."""
        rows = await self._pool.fetch(
            "SELECT s.id, s.arn, s.rotation_rules, s.next_rotation_at, s.last_rotated_at"
            " FROM store.secrets s WHERE s.rotation_enabled AND s.next_rotation_at <= $1"
            " AND s.deleted_at IS NULL AND NOT s.is_replica"
            " AND NOT EXISTS (SELECT 1 FROM store.rotation_attempts a WHERE a.secret_id = s.id"
            " AND a.status IN ('Pending', 'InProgress'))"
            " ORDER BY s.next_rotation_at LIMIT $2",
            now,
            limit,
        )
        return [
            DueSecret(
                id=r["id"],
                arn=r["arn"],
                rules=_rules(r["rotation_rules"]),
                next_rotation=r["next_rotation_at"],
                last_rotated=r["last_rotated_at"],
            )
            for r in rows
        ]

    async def claimable_attempts(self, now: datetime, *, limit: int) -> list[AttemptRow]:
        """Unfinished attempts nobody holds a live lease on, whose next try is due."""
        rows = await self._pool.fetch(
            f"SELECT {_ATTEMPT_COLUMNS} FROM store.rotation_attempts a JOIN store.secrets s"
            " ON s.id = a.secret_id WHERE a.status IN ('Pending', 'InProgress')"
            " AND (a.lease_owner IS NULL OR a.lease_expires_at <= $1)"
            " AND (a.next_try_at IS NULL OR a.next_try_at <= $1)"
            " ORDER BY a.next_try_at NULLS FIRST, a.id LIMIT $2",
            now,
            limit,
        )
        return [_attempt(r) for r in rows]

    async def functions(self) -> list[FunctionRow]:
        rows = await self._pool.fetch("SELECT * FROM store.rotation_functions ORDER BY name")
        return [_function(r) for r in rows]

    async def function(self, *, name: str | None = None, arn: str | None = None) -> FunctionRow | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM store.rotation_functions WHERE name = $1 OR arn = $2", name, arn
        )
        return None if row is None else _function(row)
