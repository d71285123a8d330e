"""SQL of ListSecrets (and BatchGetSecretValue with filters): the filters of ``coffer.core.listing`` as SQL
conditions on ``store.list_terms``, keyset pagination on the sort's index, and the upkeep of the terms.

Every filter is evaluated by PostgreSQL: a prefix is one range ``[prefix, successor)`` in byte order (the
``COLLATE "C"`` indexes ``list_terms_by_term`` and ``secrets_list_name``); a page is ``ORDER BY <sort key>, id
LIMIT n`` after the last key of the previous page, so a page reads about ``n`` rows whatever the table's size
(sorting by last changed/accessed date is a top-N sort of the matching rows: those columns change on
PutSecretValue/GetSecretValue and stay unindexed to keep those paths cheap)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from coffer.core import errors
from coffer.core.listing import (
    DESCRIPTION_FIELD,
    OWNER,
    TAG_KEY,
    TAG_VALUE,
    WORD,
    Cursor,
    Listable,
    ListFilter,
    from_epoch_us,
    list_terms,
    pattern_words,
    prefix_range,
)
from coffer.core.model import Tag
from coffer.store.sql.common import Reads, date_of, tags_of

#: Sort -> (SQL expression, parameter type) per key part; the last part is always the id (unique).
_SORT_SQL: dict[str, tuple[tuple[str, str], ...]] = {
    "created-date": (("s.created_at", "timestamptz"), ("s.id", "bigint")),
    "last-changed-date": (("s.last_changed_at", "timestamptz"), ("s.id", "bigint")),
    "last-accessed-date": (
        ("(s.last_accessed_on IS NOT NULL)::int", "int"),
        ("COALESCE(s.last_accessed_on - DATE '0001-01-01' + 1, 0)", "int"),
        ("s.id", "bigint"),
    ),
    "name": (('s.name COLLATE "C"', "text"), ("s.id", "bigint")),
}
_TIMESTAMP_SORTS = ("created-date", "last-changed-date")
_NAME_C = 's.name COLLATE "C"'


class _Params:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str = "text") -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def _range(p: _Params, column: str, prefix: str) -> str:
    low, high = prefix_range(prefix)
    if not low:
        return "true"
    cond = f"{column} >= {p(low)}"
    return cond if high is None else f"{cond} AND {column} < {p(high)}"


def _term(p: _Params, kind: str, prefix: str, *, field: int | None = None) -> str:
    on_field = "" if field is None else f" AND t.field = {field}"
    return (
        "EXISTS (SELECT 1 FROM store.list_terms t WHERE t.secret_id = s.id"
        f" AND t.kind = '{kind}'{on_field} AND {_range(p, 't.term', prefix)})"
    )


def _positive(p: _Params, key: str, pattern: str) -> str:
    if key == "name":
        return f"({_range(p, _NAME_C, pattern)})"
    if key == "tag-key":
        return _term(p, TAG_KEY, pattern)
    if key == "tag-value":
        return _term(p, TAG_VALUE, pattern)
    if key == "owning-service":
        return _term(p, OWNER, pattern.lower())
    if key == "primary-region":
        return f"COALESCE(starts_with(s.primary_region, {p(pattern)}), false)"
    if key == "description":
        words = pattern_words(pattern)
        if not words:
            return "false"
        return "(" + " AND ".join(_term(p, WORD, w, field=DESCRIPTION_FIELD) for w in words) + ")"
    if key == "all":
        words = pattern_words(pattern)
        if not words:
            return "false"
        if len(words) == 1:
            return _term(p, WORD, words[0])
        # every word in one and the same text (name, description, one tag key or one tag value)
        ranges = [_range(p, "t.term", w) for w in words]
        return (
            "EXISTS (SELECT 1 FROM store.list_terms t WHERE t.secret_id = s.id AND t.kind = 'w'"
            f" AND ({' OR '.join(f'({r})' for r in ranges)}) GROUP BY t.field"
            f" HAVING {' AND '.join(f'bool_or({r})' for r in ranges)})"
        )
    raise errors.InvalidParameter(f"Invalid filter key: {key}")


def _condition(p: _Params, flt: ListFilter) -> str:
    parts = []
    for value in flt.values:
        if value.startswith("!"):
            parts.append(f"NOT {_positive(p, flt.key, value[1:])}")
        else:
            parts.append(_positive(p, flt.key, value))
    return "(" + " OR ".join(parts) + ")"


def page_query(
    filters: Sequence[ListFilter],
    cursor: Cursor,
    *,
    include_deleted: bool,
    limit: int,
    account: str | None = None,
) -> tuple[str, list[Any]]:
    """The SQL (and its parameters) of one page: at most ``limit`` secrets after the cursor, of ``account``
    (every account when None)."""
    p = _Params()
    where = [] if include_deleted else ["s.deleted_at IS NULL"]
    if account is not None:
        where.append(f"s.account_id = {p(account)}")
    where.extend(_condition(p, f) for f in filters)
    parts = _SORT_SQL[cursor.sort_by]
    if cursor.after is not None:
        after = list(cursor.after)
        if cursor.sort_by in _TIMESTAMP_SORTS:
            after[0] = from_epoch_us(after[0])
        left = ", ".join(expr for expr, _ in parts)
        right = ", ".join(p(v, cast) for v, (_, cast) in zip(after, parts, strict=True))
        where.append(f"({left}) {'<' if cursor.descending else '>'} ({right})")
    direction = " DESC" if cursor.descending else ""
    order = ", ".join(f"{expr}{direction}" for expr, _ in parts)
    sql = (
        "SELECT s.id, s.name, s.created_at, s.last_changed_at, s.last_accessed_on FROM store.secrets s"
        f" WHERE {' AND '.join(where) or 'true'} ORDER BY {order} LIMIT {p(limit, 'int')}"
    )
    return sql, p.values


class ListingReads(Reads):
    async def list_page(
        self,
        filters: Sequence[ListFilter],
        cursor: Cursor,
        *,
        include_deleted: bool,
        limit: int,
        account: str | None = None,
    ) -> list[Listable]:
        """One page of matching secrets in sort order (enough of each to sort and to name it)."""
        sql, args = page_query(filters, cursor, include_deleted=include_deleted, limit=limit, account=account)
        rows = await self._pool.fetch(sql, *args)
        return [
            Listable(
                ident=r["id"],
                name=r["name"],
                created_date=r["created_at"],
                last_changed_date=r["last_changed_at"],
                last_accessed_date=date_of(r["last_accessed_on"]),
            )
            for r in rows
        ]

    async def index_missing_terms(self, *, batch: int = 1000) -> int:
        """Compute the list terms of secrets that have none yet (written before the terms existed), ``batch``
        secrets per transaction. Returns how many secrets were indexed."""
        done = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT id, name, description, tags, owning_service FROM store.secrets"
                    " WHERE NOT terms_indexed ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                    batch,
                )
                if not rows:
                    return done
                await _write_terms(conn, rows)
                await conn.execute(
                    "UPDATE store.secrets SET terms_indexed = true WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows],
                )
            done += len(rows)


_REPLACE_TERMS_SQL = """
WITH gone AS (DELETE FROM store.list_terms WHERE secret_id = ANY($1::bigint[]))
INSERT INTO store.list_terms (secret_id, kind, field, term)
SELECT i, k::"char", f, t FROM unnest($2::bigint[], $3::text[], $4::int[], $5::text[]) AS u(i, k, f, t)
"""


async def _write_terms(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    """Replace the terms of many secrets at once (binary COPY), in the caller's transaction."""
    await conn.execute(
        "DELETE FROM store.list_terms WHERE secret_id = ANY($1::bigint[])", [r["id"] for r in rows]
    )
    records = [
        (r["id"], kind.encode(), field, term)
        for r in rows
        for kind, field, term in list_terms(
            r["name"], r["description"], tags_of(r["tags"]), r["owning_service"]
        )
    ]
    await conn.copy_records_to_table(
        "list_terms", schema_name="store", columns=["secret_id", "kind", "field", "term"], records=records
    )


async def set_terms(
    conn: asyncpg.Connection,
    secret_id: int,
    *,
    name: str,
    description: str | None,
    tags: Sequence[Tag] | None,
    owning_service: str | None = None,
) -> None:
    """Write a new secret's list terms, in the caller's transaction."""
    terms = list_terms(name, description, tags, owning_service)
    await conn.execute(
        _REPLACE_TERMS_SQL,
        [secret_id],
        [secret_id] * len(terms),
        [k for k, _, _ in terms],
        [f for _, f, _ in terms],
        [t for _, _, t in terms],
    )


async def refresh_terms(conn: asyncpg.Connection, secret_id: int) -> None:
    """Recompute one secret's list terms (after its name, description, tags or owning service changed), in
    the caller's transaction."""
    rows = await conn.fetch(
        "SELECT id, name, description, tags, owning_service FROM store.secrets WHERE id = $1", secret_id
    )
    await _write_terms(conn, rows)
