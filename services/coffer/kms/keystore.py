"""PostgreSQL adapter of the kms service (asyncpg, schema ``kms``): all SQL lives here. Driver errors are
translated where they happen (unique violations → ``KmsAlreadyExists``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from coffer import migrations
from coffer.core import errors
from coffer.kms.model import (
    Alias,
    Key,
    KeyManager,
    KeyState,
    Material,
    MaterialState,
    RotationType,
    Scope,
    Tag,
)

KEY_CHANGED_CHANNEL = "coffer_kms_key_changed"
MIGRATIONS = migrations.MigrationSet(
    schema="kms",
    directory=Path(__file__).with_name("migrations"),
    lock_id=0x6B6D735F6D696772,  # "kms_migr"
    column="version",
    with_suffix=False,
)

_KEY_COLUMNS = """
    k.key_id, k.account_id, k.region, k.description, k.key_manager, k.managed_service, k.key_state,
    k.multi_region, k.created_at, k.deletion_date, k.rotation_enabled, k.rotation_period_days,
    k.next_rotation_at, k.on_demand_rotations, k.tags::text AS tags, k.key_policy,
    cur.material_id AS current_material_id
"""
_FROM_KEYS = """
    FROM kms.keys k
    JOIN kms.key_materials cur ON cur.key_id = k.key_id AND cur.state = 'CURRENT'
"""


def _material_columns(t: str) -> str:
    return (
        f"{t}.key_id AS m_key_id, {t}.material_id AS m_material_id, {t}.wrapped AS m_wrapped,"
        f" {t}.root_key_id AS m_root_key_id, {t}.state AS m_state, {t}.created_at AS m_created_at,"
        f" {t}.rotation_type AS m_rotation_type, {t}.rotated_at AS m_rotated_at"
    )


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the kms schema's pending migrations; returns the versions (file stems) applied now."""
    return await migrations.apply_migrations(pool, MIGRATIONS)


def _key(row: asyncpg.Record, scope: Scope) -> Key:
    tags = tuple(Tag(key=t["TagKey"], value=t["TagValue"]) for t in json.loads(row["tags"]))
    return Key(
        key_id=row["key_id"],
        # the key's own account (a Decrypt may find a key of another account: the blob names it)
        arn=Scope(scope.partition, row["region"], row["account_id"]).key_arn(row["key_id"]),
        account_id=row["account_id"],
        region=row["region"],
        description=row["description"],
        key_manager=KeyManager(row["key_manager"]),
        key_state=KeyState(row["key_state"]),
        created_at=row["created_at"],
        current_material_id=row["current_material_id"],
        multi_region=row["multi_region"],
        deletion_date=row["deletion_date"],
        rotation_enabled=row["rotation_enabled"],
        rotation_period_days=row["rotation_period_days"],
        next_rotation_at=row["next_rotation_at"],
        on_demand_rotations=row["on_demand_rotations"],
        tags=tags,
        managed_service=row["managed_service"],
        policy=row["key_policy"],
    )


def _material(row: asyncpg.Record) -> Material | None:
    if row["m_material_id"] is None:
        return None
    return Material(
        key_id=row["m_key_id"],
        material_id=row["m_material_id"],
        wrapped=bytes(row["m_wrapped"]),
        root_key_id=row["m_root_key_id"],
        state=MaterialState(row["m_state"]),
        created_at=row["m_created_at"],
        rotation_type=RotationType(row["m_rotation_type"]) if row["m_rotation_type"] else None,
        rotated_at=row["m_rotated_at"],
    )


def _alias(row: asyncpg.Record, scope: Scope) -> Alias:
    return Alias(
        alias_name=row["alias_name"],
        alias_arn=scope.alias_arn(row["alias_name"]),
        target_key_id=row["key_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PgKeyTx:
    def __init__(self, conn: Any, scope: Scope) -> None:
        self._conn = conn
        self._scope = scope

    async def lock_key(self, key_id: str) -> Key | None:
        row = await self._conn.fetchrow(
            f"SELECT {_KEY_COLUMNS} {_FROM_KEYS}"
            " WHERE k.key_id = $1 AND k.account_id = $2 AND k.region = $3 FOR UPDATE OF k",
            key_id,
            self._scope.account_id,
            self._scope.region,
        )
        return None if row is None else _key(row, self._scope)

    async def insert_key(self, key: Key, material: Material) -> None:
        tags = json.dumps([{"TagKey": t.key, "TagValue": t.value} for t in key.tags])
        try:
            await self._conn.execute(
                """
                INSERT INTO kms.keys (key_id, account_id, region, description, key_manager,
                    managed_service, key_state, multi_region, created_at, deletion_date, rotation_enabled,
                    rotation_period_days, next_rotation_at, on_demand_rotations, tags, key_policy)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb, $16)
                """,
                key.key_id,
                key.account_id,
                key.region,
                key.description,
                key.key_manager.value,
                key.managed_service,
                key.key_state.value,
                key.multi_region,
                key.created_at,
                key.deletion_date,
                key.rotation_enabled,
                key.rotation_period_days,
                key.next_rotation_at,
                key.on_demand_rotations,
                tags,
                key.policy,
            )
        except asyncpg.UniqueViolationError:
            raise errors.KmsAlreadyExists(f"Key {key.arn} already exists") from None
        await self._insert_material(material)

    async def _insert_material(self, material: Material) -> None:
        await self._conn.execute(
            """
            INSERT INTO kms.key_materials (key_id, material_id, wrapped, root_key_id, state, rotation_type,
                rotated_at, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            """,
            material.key_id,
            material.material_id,
            material.wrapped,
            material.root_key_id,
            material.state.value,
            material.rotation_type.value if material.rotation_type else None,
            material.rotated_at,
            material.created_at,
        )

    async def set_key_policy(self, key_id: str, policy: str) -> None:
        await self._conn.execute("UPDATE kms.keys SET key_policy = $2 WHERE key_id = $1", key_id, policy)

    async def update_key(self, key: Key) -> None:
        await self._conn.execute(
            """
            UPDATE kms.keys SET description = $2, key_state = $3, deletion_date = $4, rotation_enabled = $5,
                rotation_period_days = $6, next_rotation_at = $7, on_demand_rotations = $8
            WHERE key_id = $1
            """,
            key.key_id,
            key.description,
            key.key_state.value,
            key.deletion_date,
            key.rotation_enabled,
            key.rotation_period_days,
            key.next_rotation_at,
            key.on_demand_rotations,
        )

    async def add_material(self, material: Material) -> None:
        await self._conn.execute(
            "UPDATE kms.key_materials SET state = 'NON_CURRENT' WHERE key_id = $1 AND state = 'CURRENT'",
            material.key_id,
        )
        await self._insert_material(material)

    async def get_alias(self, alias_name: str, *, for_update: bool = False) -> Alias | None:
        row = await self._conn.fetchrow(
            "SELECT alias_name, key_id, created_at, updated_at FROM kms.aliases"
            " WHERE account_id = $1 AND region = $2 AND alias_name = $3"
            + (" FOR UPDATE" if for_update else ""),
            self._scope.account_id,
            self._scope.region,
            alias_name,
        )
        return None if row is None else _alias(row, self._scope)

    async def count_aliases(self, key_id: str) -> int:
        return int(await self._conn.fetchval("SELECT count(*) FROM kms.aliases WHERE key_id = $1", key_id))

    async def insert_alias(self, alias_name: str, key_id: str, now: datetime) -> None:
        try:
            await self._conn.execute(
                "INSERT INTO kms.aliases (account_id, region, alias_name, key_id, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $5)",
                self._scope.account_id,
                self._scope.region,
                alias_name,
                key_id,
                now,
            )
        except asyncpg.UniqueViolationError:
            raise errors.KmsAlreadyExists(
                f"An alias with the name {self._scope.alias_arn(alias_name)} already exists"
            ) from None

    async def delete_alias(self, alias_name: str) -> bool:
        status: str = await self._conn.execute(
            "DELETE FROM kms.aliases WHERE account_id = $1 AND region = $2 AND alias_name = $3",
            self._scope.account_id,
            self._scope.region,
            alias_name,
        )
        return status.endswith(" 1")

    async def delete_due_keys(self, now: datetime) -> list[str]:
        rows = await self._conn.fetch(
            """
            DELETE FROM kms.keys
            WHERE account_id = $1 AND region = $2 AND key_state = 'PendingDeletion' AND deletion_date <= $3
            RETURNING key_id
            """,
            self._scope.account_id,
            self._scope.region,
            now,
        )
        return sorted(r["key_id"] for r in rows)

    async def notify_key_changed(self, key_arn: str) -> None:
        await self._conn.execute("SELECT pg_notify($1, $2)", KEY_CHANGED_CHANNEL, key_arn)


class PgKeyStore:
    """The key store over an asyncpg pool, scoped to one partition/region/account."""

    def __init__(self, pool: asyncpg.Pool, scope: Scope) -> None:
        self._pool = pool
        self._scope = scope

    def scoped(self, scope: Scope) -> PgKeyStore:
        """The same store for another account (keys, aliases and lists are per account)."""
        return PgKeyStore(self._pool, scope)

    async def accounts(self) -> list[str]:
        """The accounts that have keys in this region (maintenance visits each)."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT account_id FROM kms.keys WHERE region = $1 ORDER BY account_id",
            self._scope.region,
        )
        return [r["account_id"] for r in rows]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgKeyTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PgKeyTx(conn, self._scope)

    async def find_key(self, key_id: str) -> Key | None:
        row = await self._pool.fetchrow(
            f"SELECT {_KEY_COLUMNS} {_FROM_KEYS} WHERE k.key_id = $1 AND k.account_id = $2 AND k.region = $3",
            key_id,
            self._scope.account_id,
            self._scope.region,
        )
        return None if row is None else _key(row, self._scope)

    async def find_key_by_alias(self, alias_name: str) -> Key | None:
        row = await self._pool.fetchrow(
            f"SELECT {_KEY_COLUMNS} {_FROM_KEYS}"
            " JOIN kms.aliases a ON a.key_id = k.key_id"
            " WHERE a.account_id = $1 AND a.region = $2 AND a.alias_name = $3",
            self._scope.account_id,
            self._scope.region,
            alias_name,
        )
        return None if row is None else _key(row, self._scope)

    async def find_for_encrypt(
        self, *, key_id: str | None = None, alias_name: str | None = None
    ) -> tuple[Key, Material] | None:
        select = f"SELECT {_KEY_COLUMNS}, {_material_columns('cur')} {_FROM_KEYS}"
        if key_id is not None:
            row = await self._pool.fetchrow(
                select + " WHERE k.key_id = $1 AND k.account_id = $2 AND k.region = $3",
                key_id,
                self._scope.account_id,
                self._scope.region,
            )
        else:
            row = await self._pool.fetchrow(
                select + " JOIN kms.aliases a ON a.key_id = k.key_id"
                " WHERE a.account_id = $1 AND a.region = $2 AND a.alias_name = $3",
                self._scope.account_id,
                self._scope.region,
                alias_name,
            )
        if row is None:
            return None
        material = _material(row)
        assert material is not None
        return _key(row, self._scope), material

    async def find_for_decrypt(self, key_id: str, material_id: str) -> tuple[Key, Material | None] | None:
        row = await self._pool.fetchrow(
            f"SELECT {_KEY_COLUMNS}, {_material_columns('m')} {_FROM_KEYS}"
            " LEFT JOIN kms.key_materials m ON m.key_id = k.key_id AND m.material_id = $2"
            " WHERE k.key_id = $1 AND k.region = $3",
            key_id,
            material_id,
            self._scope.region,
        )
        if row is None:
            return None
        return _key(row, self._scope), _material(row)

    async def list_key_ids(self, *, after: str | None, limit: int) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT key_id FROM kms.keys WHERE account_id = $1 AND region = $2"
            ' AND ($3::text IS NULL OR key_id COLLATE "C" > $3) ORDER BY key_id COLLATE "C" LIMIT $4',
            self._scope.account_id,
            self._scope.region,
            after,
            limit,
        )
        return [r["key_id"] for r in rows]

    async def list_aliases(self, *, key_id: str | None, after: str | None, limit: int) -> list[Alias]:
        rows = await self._pool.fetch(
            "SELECT alias_name, key_id, created_at, updated_at FROM kms.aliases"
            " WHERE account_id = $1 AND region = $2 AND ($3::text IS NULL OR key_id = $3)"
            ' AND ($4::text IS NULL OR alias_name COLLATE "C" > $4)'
            ' ORDER BY alias_name COLLATE "C" LIMIT $5',
            self._scope.account_id,
            self._scope.region,
            key_id,
            after,
            limit,
        )
        return [_alias(r, self._scope) for r in rows]

    async def alias_exists(self, alias_name: str) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM kms.aliases"
                " WHERE account_id = $1 AND region = $2 AND alias_name = $3)",
                self._scope.account_id,
                self._scope.region,
                alias_name,
            )
        )

    async def due_for_rotation(self, now: datetime, *, limit: int) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT key_id FROM kms.keys WHERE account_id = $1 AND region = $2 AND rotation_enabled"
            " AND key_state = 'Enabled' AND next_rotation_at <= $3 ORDER BY next_rotation_at LIMIT $4",
            self._scope.account_id,
            self._scope.region,
            now,
            limit,
        )
        return [r["key_id"] for r in rows]

    async def root_key_ids(self) -> set[str]:
        """The root key ids the stored material is wrapped under (checked against the loaded root key)."""
        rows = await self._pool.fetch("SELECT DISTINCT root_key_id FROM kms.key_materials")
        return {r["root_key_id"] for r in rows}
