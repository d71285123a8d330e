"""SQL of rotation: a secret's rotation columns, attempts (persisting what the rotation state machine of
``coffer.core.rotation`` decides), steps, custom rotation functions, and the ``coffer_rotation_requested``
notification that wakes the scheduler (delivered at commit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from coffer.core.rotation import OPEN_STATUSES, Attempt, AttemptStatus
from coffer.store.records import AttemptRow, DueSecret, FunctionRow, RotationConfig, StepRow
from coffer.store.sql.common import ROTATION_CHANNEL, Reads, Statements, rules_json, rules_of

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

#: The open attempt statuses as an SQL list.
_OPEN = "(" + ", ".join(f"'{st.value}'" for st in AttemptStatus if st in OPEN_STATUSES) + ")"

_ATTEMPT_COLUMNS = """
    a.id, a.secret_id, s.arn AS secret_arn, a.token, a.rotator, a.rotate_immediately, a.trigger, a.status,
    a.tries, a.requested_at, a.started_at, a.finished_at, a.next_try_at, a.lease_owner, a.lease_expires_at,
    a.lease_seconds, a.error
"""


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


class RotationStatements(Statements):
    """Rotation statements inside one write transaction."""

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
            rules=rules_of(row["rotation_rules"]),
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
        """The valueless AWSPENDING version a rotation starts with (its value is set by createSecret)."""
        await self._conn.execute(
            "INSERT INTO store.versions (secret_id, version_id, created_at) VALUES ($1, $2, $3)",
            secret_id,
            version_id,
            now,
        )

    async def open_attempt(self, secret_id: int) -> AttemptRow | None:
        row = await self._conn.fetchrow(
            f"SELECT {_ATTEMPT_COLUMNS} FROM store.rotation_attempts a JOIN store.secrets s"
            f" ON s.id = a.secret_id WHERE a.secret_id = $1 AND a.status IN {_OPEN}"
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
        state: Attempt,
        now: datetime,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO store.rotation_attempts (secret_id, token, rotator, rotate_immediately, trigger,"
            " status, requested_at, next_try_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            secret_id,
            token,
            rotator,
            rotate_immediately,
            trigger,
            state.status.value,
            now,
            state.next_try,
        )

    async def save_attempt(self, attempt_id: int, state: Attempt) -> None:
        """Persist what the rotation state machine decided."""
        await self._conn.execute(
            "UPDATE store.rotation_attempts SET status = $2, tries = $3, started_at = $4, finished_at = $5,"
            " next_try_at = $6, lease_owner = $7, lease_expires_at = $8, lease_seconds = $9, error = $10"
            " WHERE id = $1",
            attempt_id,
            state.status.value,
            state.tries,
            state.started,
            state.finished,
            state.next_try,
            state.lease_owner,
            state.lease_expires,
            state.lease_seconds,
            state.error,
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


class RotationReads(Reads):
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
            f" AND a.status IN {_OPEN})"
            " ORDER BY s.next_rotation_at LIMIT $2",
            now,
            limit,
        )
        return [
            DueSecret(
                id=r["id"],
                arn=r["arn"],
                rules=rules_of(r["rotation_rules"]),
                next_rotation=r["next_rotation_at"],
                last_rotated=r["last_rotated_at"],
            )
            for r in rows
        ]

    async def claimable_attempts(self, now: datetime, *, limit: int) -> list[AttemptRow]:
        """Unfinished attempts nobody holds a live lease on, whose next try is due."""
        rows = await self._pool.fetch(
            f"SELECT {_ATTEMPT_COLUMNS} FROM store.rotation_attempts a JOIN store.secrets s"
            f" ON s.id = a.secret_id WHERE a.status IN {_OPEN}"
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
