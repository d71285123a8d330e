"""SQL over the IAM tables (migration 0005_iam.sql): accounts, users and roles (``store.iam_principals``),
inline policies and access keys. Every write runs in one transaction (:meth:`IamRepository.transaction`) and
ends with :meth:`IamTx.notify`, which ``pg_notify('coffer_iam', …)``s the access key ids and principal ARNs
the change affects, so the caches of principals drop them before the change is visible to anyone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from coffer.core.principal import ROOT_ACCOUNT
from coffer.store.access_key_secrets import SealedSecret

NOTIFY_CHANNEL = "coffer_iam"
#: pg_notify payloads must stay under 8,000 bytes; longer lists are cut to a "reset" (drop everything).
MAX_NOTIFY_BYTES = 7000


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    name: str
    email: str | None
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PrincipalRow:
    id: int
    account_id: str
    kind: str  # 'user' | 'role'
    name: str
    path: str
    unique_id: str
    arn: str
    tags: dict[str, str]
    trust_policy: str | None
    max_session_seconds: int
    description: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AccessKeyRow:
    access_key_id: str
    principal_id: str | int
    status: str
    created_at: datetime


def _principal(row: Mapping[str, Any]) -> PrincipalRow:
    tags = row["tags"]  # the store's pool decodes json/jsonb (coffer.store.sql.common)
    return PrincipalRow(
        id=row["id"],
        account_id=row["account_id"],
        kind=row["kind"],
        name=row["name"],
        path=row["path"],
        unique_id=row["unique_id"],
        arn=row["arn"],
        tags=dict(tags),
        trust_policy=row["trust_policy"],
        max_session_seconds=row["max_session_seconds"],
        description=row["description"],
        created_at=row["created_at"],
    )


def _account(row: Mapping[str, Any]) -> AccountRow:
    return AccountRow(
        account_id=row["account_id"],
        name=row["name"],
        email=row["email"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


_PRINCIPAL_COLS = (
    "id, account_id, kind, name, path, unique_id, arn, tags, trust_policy, max_session_seconds, "
    "description, created_at"
)


def notify_payload(access_key_ids: Iterable[str] = (), principal_arns: Iterable[str] = ()) -> str:
    """The JSON the caches receive: ``{"access_key_ids": [...], "principal_arns": [...]}``; when too long for
    a NOTIFY, ``{"reset": true}`` (drop every cached principal)."""
    body = json.dumps(
        {"access_key_ids": sorted(set(access_key_ids)), "principal_arns": sorted(set(principal_arns))},
        separators=(",", ":"),
    )
    if len(body.encode("utf-8")) > MAX_NOTIFY_BYTES:
        return json.dumps({"reset": True, "access_key_ids": [], "principal_arns": []}, separators=(",", ":"))
    return body


class IamTx:
    """The statements of one transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def notify(self, *, access_key_ids: Iterable[str] = (), principal_arns: Iterable[str] = ()) -> None:
        await self.conn.execute(
            "SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, notify_payload(access_key_ids, principal_arns)
        )

    # -- accounts ---------------------------------------------------------------------------------------

    async def account(self, account_id: str) -> AccountRow | None:
        row = await self.conn.fetchrow("SELECT * FROM store.iam_accounts WHERE account_id = $1", account_id)
        return _account(row) if row is not None else None

    async def insert_account(
        self, account_id: str, name: str, email: str | None, created_by: str | None
    ) -> bool:
        status = await self.conn.execute(
            "INSERT INTO store.iam_accounts (account_id, name, email, created_by) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            account_id,
            name,
            email,
            created_by,
        )
        return bool(status.endswith(" 1"))

    async def account_with_email(self, email: str) -> AccountRow | None:
        row = await self.conn.fetchrow(
            "SELECT * FROM store.iam_accounts WHERE lower(email) = lower($1) LIMIT 1", email
        )
        return _account(row) if row is not None else None

    async def list_accounts(self, after: str | None, limit: int) -> list[AccountRow]:
        rows = await self.conn.fetch(
            "SELECT * FROM store.iam_accounts WHERE ($1::text IS NULL OR account_id > $1) "
            "ORDER BY account_id LIMIT $2",
            after,
            limit,
        )
        return [_account(r) for r in rows]

    # -- principals -------------------------------------------------------------------------------------

    async def principal(
        self, account: str, kind: str, name: str, *, lock: bool = False
    ) -> PrincipalRow | None:
        row = await self.conn.fetchrow(
            f"SELECT {_PRINCIPAL_COLS} FROM store.iam_principals "
            "WHERE account_id = $1 AND kind = $2 AND lower(name) = lower($3)"
            + (" FOR UPDATE" if lock else ""),
            account,
            kind,
            name,
        )
        return _principal(row) if row is not None else None

    async def insert_principal(
        self,
        *,
        account: str,
        kind: str,
        name: str,
        path: str,
        unique_id: str,
        arn: str,
        tags: Mapping[str, str],
        trust_policy: str | None = None,
        max_session_seconds: int = 3600,
        description: str | None = None,
    ) -> PrincipalRow | None:
        """The new row, or None when the name is taken in the account (case-insensitively)."""
        row = await self.conn.fetchrow(
            "INSERT INTO store.iam_principals (account_id, kind, name, path, unique_id, arn, tags, "
            "trust_policy, max_session_seconds, description) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10) "
            f"ON CONFLICT DO NOTHING RETURNING {_PRINCIPAL_COLS}",
            account,
            kind,
            name,
            path,
            unique_id,
            arn,
            dict(tags),
            trust_policy,
            max_session_seconds,
            description,
        )
        return _principal(row) if row is not None else None

    async def list_principals(
        self, account: str, kind: str, path_prefix: str, after: str | None, limit: int
    ) -> list[PrincipalRow]:
        rows = await self.conn.fetch(
            f"SELECT {_PRINCIPAL_COLS} FROM store.iam_principals WHERE account_id = $1 AND kind = $2 "
            "AND starts_with(path, $3) AND ($4::text IS NULL OR lower(name) > $4) "
            "ORDER BY lower(name) LIMIT $5",
            account,
            kind,
            path_prefix,
            after,
            limit,
        )
        return [_principal(r) for r in rows]

    async def set_tags(self, principal_id: int, tags: Mapping[str, str]) -> None:
        await self.conn.execute(
            "UPDATE store.iam_principals SET tags = $2::jsonb WHERE id = $1",
            principal_id,
            dict(tags),
        )

    async def set_trust_policy(self, principal_id: int, document: str) -> None:
        await self.conn.execute(
            "UPDATE store.iam_principals SET trust_policy = $2 WHERE id = $1", principal_id, document
        )

    async def delete_principal(self, principal_id: int) -> list[str]:
        """Delete the row (its policies and keys go with it); returns the access key ids it had."""
        keys = await self.conn.fetch(
            "DELETE FROM store.iam_access_keys WHERE principal_id = $1 RETURNING access_key_id", principal_id
        )
        await self.conn.execute("DELETE FROM store.iam_principals WHERE id = $1", principal_id)
        return [r["access_key_id"] for r in keys]

    # -- policies ---------------------------------------------------------------------------------------

    async def put_policy(self, principal_id: int, name: str, document: str) -> None:
        await self.conn.execute(
            "INSERT INTO store.iam_policies (principal_id, policy_name, document) VALUES ($1, $2, $3) "
            "ON CONFLICT (principal_id, policy_name) DO UPDATE SET document = EXCLUDED.document, "
            "updated_at = now()",
            principal_id,
            name,
            document,
        )

    async def policy(self, principal_id: int, name: str) -> tuple[str, str] | None:
        row = await self.conn.fetchrow(
            "SELECT policy_name, document FROM store.iam_policies "
            "WHERE principal_id = $1 AND policy_name = $2",
            principal_id,
            name,
        )
        return (row["policy_name"], row["document"]) if row is not None else None

    async def delete_policy(self, principal_id: int, name: str) -> bool:
        status = await self.conn.execute(
            "DELETE FROM store.iam_policies WHERE principal_id = $1 AND policy_name = $2", principal_id, name
        )
        return bool(status.endswith(" 1"))

    async def policy_names(self, principal_id: int, after: str | None, limit: int) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT policy_name FROM store.iam_policies WHERE principal_id = $1 "
            "AND ($2::text IS NULL OR policy_name > $2) ORDER BY policy_name LIMIT $3",
            principal_id,
            after,
            limit,
        )
        return [r["policy_name"] for r in rows]

    async def policy_count(self, principal_id: int) -> int:
        count = await self.conn.fetchval(
            "SELECT count(*) FROM store.iam_policies WHERE principal_id = $1", principal_id
        )
        return int(count)

    async def other_policies_size(self, principal_id: int, except_name: str) -> int:
        """IAM counts a user's or role's inline policies together: the non-whitespace characters of the
        others."""
        total = await self.conn.fetchval(
            "SELECT coalesce(sum(length(regexp_replace(document, '\\s', '', 'g'))), 0) "
            "FROM store.iam_policies WHERE principal_id = $1 AND policy_name <> $2",
            principal_id,
            except_name,
        )
        return int(total)

    # -- access keys ------------------------------------------------------------------------------------

    async def user_keys(self, principal_id: int) -> list[AccessKeyRow]:
        rows = await self.conn.fetch(
            "SELECT access_key_id, principal_id, status, created_at FROM store.iam_access_keys "
            "WHERE principal_id = $1 AND expires_at IS NULL ORDER BY created_at, access_key_id",
            principal_id,
        )
        return [
            AccessKeyRow(r["access_key_id"], r["principal_id"], r["status"], r["created_at"]) for r in rows
        ]

    async def insert_access_key(
        self,
        access_key_id: str,
        principal_id: int,
        signing_key: bytes,
        sealed: SealedSecret | None,
        *,
        session_name: str | None = None,
        token_sha256: bytes | None = None,
        expires_at: datetime | None = None,
        session_tags: Mapping[str, str] | None = None,
    ) -> datetime:
        created: datetime = await self.conn.fetchval(
            "INSERT INTO store.iam_access_keys (access_key_id, principal_id, signing_key, secret_ciphertext, "
            "secret_wrapped_key, session_name, token_sha256, expires_at, session_tags) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb) RETURNING created_at",
            access_key_id,
            principal_id,
            signing_key,
            sealed.ciphertext if sealed is not None else None,
            sealed.wrapped_key if sealed is not None else None,
            session_name,
            token_sha256,
            expires_at,
            dict(session_tags) if session_tags is not None else None,
        )
        return created

    async def set_key_status(self, principal_id: int, access_key_id: str, status: str) -> bool:
        result = await self.conn.execute(
            "UPDATE store.iam_access_keys SET status = $3 WHERE principal_id = $1 AND access_key_id = $2 "
            "AND expires_at IS NULL",
            principal_id,
            access_key_id,
            status,
        )
        return bool(result.endswith(" 1"))

    async def delete_key(self, principal_id: int, access_key_id: str) -> bool:
        result = await self.conn.execute(
            "DELETE FROM store.iam_access_keys WHERE principal_id = $1 AND access_key_id = $2 "
            "AND expires_at IS NULL",
            principal_id,
            access_key_id,
        )
        return bool(result.endswith(" 1"))


class IamRepository:
    """Over the store's pool (``coffer.store.sql.common.create_pool``: json/jsonb are encoded and decoded
    as Python values)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[IamTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield IamTx(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[IamTx]:
        async with self._pool.acquire() as conn:
            yield IamTx(conn)


async def ensure_root_account(pool: asyncpg.Pool) -> None:
    """The root account 000000000000 exists (idempotent): the legacy admin's IAM calls act inside it."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO store.iam_accounts (account_id, name) VALUES ($1, 'root') ON CONFLICT DO NOTHING",
            ROOT_ACCOUNT,
        )
