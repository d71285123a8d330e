"""SQL of the secret use cases: secrets, versions and labels, the change record every write ends with
(change sequence + outbox row + ``NOTIFY coffer_store_changed``, delivered at commit), the GetSecretValue
read and the purge of secrets whose recovery window ended."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from coffer.core import errors
from coffer.core.arn import SecretRef
from coffer.core.changes import event_kind
from coffer.core.model import ReplicationStatus, Secret, SecretVersion, Tag
from coffer.core.secret_keys import SecretFacts
from coffer.core.versions import versions_to_stages
from coffer.store.records import LockedSecret, NameTaken, SealedValue, StoredValue, ValueRow, VersionMeta
from coffer.store.sql.common import (
    LOOKUP,
    REPLICATION_OUTBOX_LOCK,
    Reads,
    Statements,
    date_of,
    rules_of,
    tags_json,
    tags_of,
)
from coffer.store.sql.listing import refresh_terms, set_terms
from coffer.store.sql.replication import RECORD_REPLICATED_SQL

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
        last_accessed_date=date_of(row["last_accessed_on"]),
        deleted_date=row["deleted_at"],
        deletion_date=row["deletion_date"],
        rotation_enabled=row["rotation_enabled"],
        rotation_lambda_arn=row["rotation_lambda_arn"],
        rotation_rules=rules_of(row["rotation_rules"]),
        last_rotated_date=row["last_rotated_at"],
        next_rotation_date=row["next_rotation_at"],
        tags=tags_of(row["tags"]),
        owning_service=row["owning_service"],
        primary_region=row["primary_region"],
        replication_status=replication,
        version_ids_to_stages=versions_to_stages(labels),
    )


#: What authorization needs of a secret (``coffer.core.secret_keys.SecretFacts``), selected from ``s``.
FACTS_COLUMNS = """s.account_id, s.region, s.tags, s.resource_policy, s.primary_region, s.rotation_lambda_arn,
    s.rotation_rotator, s.kms_key_id, s.kms_key_arn, s.change_seq"""


def facts_of(row: asyncpg.Record) -> SecretFacts:
    return SecretFacts(
        arn=row["arn"],
        name=row["name"],
        account=row["account_id"],
        region=row["region"],
        tags=tags_of(row["tags"]),
        resource_policy=row["resource_policy"],
        primary_region=row["primary_region"],
        rotation_lambda_arn=row["rotation_lambda_arn"],
        rotation_rotator=row["rotation_rotator"],
        kms_key_id=row["kms_key_id"],
        kms_key_arn=row["kms_key_arn"],
        change_seq=row["change_seq"],
    )


_GET_VALUE_SQL = f"""
WITH s AS (
    SELECT s.id, s.arn, s.name, s.deleted_at, s.last_accessed_on, {FACTS_COLUMNS}
    FROM store.secrets s WHERE {LOOKUP}
),
holder AS (
    SELECT l.version_id FROM store.labels l JOIN s ON l.secret_id = s.id WHERE l.label = $4::text
),
v AS (
    SELECT ver.secret_id, ver.version_id, ver.created_at, ver.value_kind, ver.ciphertext, ver.wrapped_key,
           ver.last_accessed_on
    FROM store.versions ver JOIN s ON ver.secret_id = s.id
    WHERE ver.version_id = COALESCE($3::text, (SELECT version_id FROM holder))
),
ok AS (
    SELECT 1 FROM s, v
    WHERE $6::boolean AND s.deleted_at IS NULL AND v.value_kind IS NOT NULL
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
SELECT s.id AS secret_id, s.arn, s.name, s.deleted_at IS NOT NULL AS deleted, {FACTS_COLUMNS},
       (SELECT version_id FROM holder) AS stage_holder,
       v.version_id, v.created_at, v.value_kind, v.ciphertext, v.wrapped_key,
       ARRAY(SELECT l.label FROM store.labels l
             WHERE l.secret_id = s.id AND l.version_id = v.version_id ORDER BY l.label) AS stages,
       (SELECT count(*) FROM touch_secret) + (SELECT count(*) FROM touch_version) AS touched,
       s.last_accessed_on IS NOT DISTINCT FROM $5 AND v.last_accessed_on IS NOT DISTINCT FROM $5
           AS accessed_today
FROM s LEFT JOIN v ON true
"""

_RECORD_CHANGE_SQL = """
WITH bumped AS (
    UPDATE store.secrets SET change_seq = change_seq + 1, last_changed_at = $5
    WHERE id = $1 RETURNING id, arn, name, account_id, change_seq
),
ob AS (
    INSERT INTO store.outbox (secret_id, secret_arn, change_seq, event, version_id, payload, created_at)
    SELECT id, arn, change_seq, $2, $3, $4::jsonb, $5 FROM bumped
    RETURNING secret_arn
),
ev AS (
    SELECT store.append_secret_event(id, account_id, arn, name, $6, $3, $7, $5) AS appended FROM bumped
)
SELECT pg_notify('coffer_store_changed', secret_arn) FROM ob, ev
"""

_PURGE_SQL = """
WITH gone AS (
    DELETE FROM store.secrets WHERE deletion_date IS NOT NULL AND deletion_date <= $1
    RETURNING id, arn, name, account_id, change_seq
),
ob AS (
    INSERT INTO store.outbox (secret_id, secret_arn, change_seq, event, payload, created_at)
    SELECT id, arn, change_seq + 1, 'PurgeSecret', '{}'::jsonb, $1 FROM gone
    RETURNING secret_id, secret_arn
)
SELECT ob.secret_id, ob.secret_arn, gone.name, gone.account_id,
       pg_notify('coffer_store_changed', ob.secret_arn)
FROM ob JOIN gone ON gone.id = ob.secret_id
"""

# After the purge's DELETE (which holds the purged rows' locks): the change stream's lock is taken last, as
# by every other write, so no transaction waits for it while holding a row the purge needs.
_PURGE_EVENTS_SQL = """
SELECT store.append_secret_event(i, a, r, n, $5, NULL, $6, $7)
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS t(i, a, r, n)
"""

_UPDATABLE = frozenset(
    {
        "description",
        "kms_key_id",
        "kms_key_arn",
        "type",
        "tags",
        "deleted_at",
        "deletion_date",
        "resource_policy",
    }
)


class SecretStatements(Statements):
    """Secret, version and label statements inside one write transaction."""

    async def _lock(self, where: str, *args: Any) -> LockedSecret | None:
        row = await self._conn.fetchrow(
            "SELECT s.id, s.arn, s.name, s.deleted_at IS NOT NULL AS deleted, s.is_replica,"
            f" {FACTS_COLUMNS},"
            " ARRAY(SELECT r.region FROM store.replication_status r WHERE r.secret_id = s.id"
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
            tags=tags_of(row["tags"]),
            replica_regions=tuple(row["replica_regions"]),
            versions={
                v["version_id"]: VersionMeta(created_date=v["created_at"], has_value=v["has_value"])
                for v in versions
            },
            labels={r["label"]: r["version_id"] for r in labels},
            facts=facts_of(row),
        )

    async def lock(self, ref: SecretRef) -> LockedSecret | None:
        return await self._lock(LOOKUP, ref.arn, ref.name_key)

    async def lock_existing(self, ref: SecretRef) -> LockedSecret:
        """Lock the secret row ``FOR UPDATE``, or raise ResourceNotFoundException."""
        locked = await self.lock(ref)
        if locked is None:
            raise errors.NotFound()
        return locked

    async def lock_by_name(self, name: str, account: str) -> LockedSecret | None:
        return await self._lock("s.account_id = $1 AND s.name = $2", account, name)

    async def lock_by_arn(self, arn: str) -> LockedSecret | None:
        return await self._lock("s.arn = $1", arn)

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
        await set_terms(self._conn, value, name=name, description=description, tags=tags)
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
        if "description" in changes or "tags" in changes:
            await refresh_terms(self._conn, secret_id)

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
        kind, detail = event_kind(event, version_id=version_id, payload=body)
        if secret_id in self._replicated:
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", REPLICATION_OUTBOX_LOCK)
            await self._conn.execute(
                RECORD_REPLICATED_SQL, secret_id, event, version_id, body, now, kind, detail
            )
            return
        await self._conn.execute(_RECORD_CHANGE_SQL, secret_id, event, version_id, body, now, kind, detail)


class SecretReads(Reads):
    async def fetch_value(
        self, ref: SecretRef, *, version_id: str | None, stage: str | None, today: date, touch: bool = True
    ) -> ValueRow | None:
        """GetSecretValue in one round trip: resolve the secret, find the version by id or label, and bump
        LastAccessedDate of secret and version (only when the request will succeed and the day changed, and
        ``touch``: a call still to be authorized touches afterwards, with ``touch_accessed``)."""
        row = await self._pool.fetchrow(
            _GET_VALUE_SQL, ref.arn, ref.name_key, version_id, stage, today, touch
        )
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
            facts=facts_of(row),
            accessed_today=bool(row["accessed_today"]),
        )

    async def touch_accessed(self, secret_id: int, version_id: str, today: date) -> None:
        """Set LastAccessedDate of a secret and one of its versions to ``today`` (once a day at most)."""
        await self._pool.execute(
            "WITH t AS (UPDATE store.secrets SET last_accessed_on = $3 WHERE id = $1"
            " AND last_accessed_on IS DISTINCT FROM $3 RETURNING 1)"
            " UPDATE store.versions SET last_accessed_on = $3 WHERE secret_id = $1 AND version_id = $2"
            " AND last_accessed_on IS DISTINCT FROM $3",
            secret_id,
            version_id,
            today,
        )

    async def secret_facts(self, ref: SecretRef) -> SecretFacts | None:
        """The secret as authorization sees it (one round trip), or None."""
        row = await self._pool.fetchrow(
            f"SELECT s.arn, s.name, {FACTS_COLUMNS} FROM store.secrets s WHERE {LOOKUP}",
            ref.arn,
            ref.name_key,
        )
        return None if row is None else facts_of(row)

    async def describe(self, ref: SecretRef) -> Secret | None:
        row = await self._pool.fetchrow(
            f"SELECT {_SECRET_COLUMNS} FROM store.secrets s WHERE {LOOKUP}", ref.arn, ref.name_key
        )
        return None if row is None else _secret(row)

    async def secrets_by_ids(self, ids: Sequence[int]) -> dict[int, Secret]:
        rows = await self._pool.fetch(
            f"SELECT {_SECRET_COLUMNS} FROM store.secrets s WHERE s.id = ANY($1::bigint[])", list(ids)
        )
        return {r["id"]: _secret(r) for r in rows}

    async def versions(self, ref: SecretRef) -> tuple[str, str, list[SecretVersion]] | None:
        """(ARN, name, every version with a value, oldest first) - placeholders are left out."""
        head = await self._pool.fetchrow(
            f"SELECT s.id, s.arn, s.name FROM store.secrets s WHERE {LOOKUP}", ref.arn, ref.name_key
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
                last_accessed_date=date_of(r["last_accessed_on"]),
                ordinal=r["ordinal"],
            )
            for r in rows
        ]
        return head["arn"], head["name"], versions

    async def purge_due(self, now: datetime) -> list[str]:
        """Delete every secret whose recovery window has ended (versions and labels cascade), with an outbox
        row and a notification each, in one transaction. Returns the purged ARNs."""
        kind, detail = event_kind("PurgeSecret", version_id=None, payload={})
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_PURGE_SQL, now)
            if rows:
                await conn.execute(
                    _PURGE_EVENTS_SQL,
                    [r["secret_id"] for r in rows],
                    [r["account_id"] for r in rows],
                    [r["secret_arn"] for r in rows],
                    [r["name"] for r in rows],
                    kind,
                    detail,
                    now,
                )
        return [r["secret_arn"] for r in rows]

    async def secret_head(self, ref: SecretRef) -> tuple[int, str, str] | None:
        row = await self._pool.fetchrow(
            f"SELECT s.id, s.arn, s.name FROM store.secrets s WHERE {LOOKUP}", ref.arn, ref.name_key
        )
        return None if row is None else (row["id"], row["arn"], row["name"])
