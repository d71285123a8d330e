"""What every area of the store's SQL shares: the pool, the JSON codecs, the SecretId lookup, the channel
and lock names, and the base classes of the statement groups (one connection inside one transaction) and of
the reads (the pool)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import asyncpg

from coffer import db
from coffer.store.records import rules_json, rules_of, tags_json, tags_of

__all__ = ["rules_json", "rules_of", "tags_json", "tags_of"]

CHANGED_CHANNEL = "coffer_store_changed"
ROTATION_CHANNEL = "coffer_rotation_requested"
#: Replicated changes take this transaction lock before their outbox row gets its id, so those rows commit
#: in id order and the replicator's per-peer cursor (an outbox id) never passes a row still in flight.
REPLICATION_OUTBOX_LOCK = 0x636F6666_6572_04

# The SecretId lookup every statement shares: the exact ARN, or the name in an account ($1 = ARN or NULL,
# $2 = [account, name] or NULL: ``SecretRef.name_key``; exactly one of them is given, so a full ARN never
# falls back to a name).
LOOKUP = (
    "(s.arn = $1 OR (s.account_id = ($2::text[])[1] AND s.name = ($2::text[])[2]))"
    " ORDER BY (s.arn = $1) DESC NULLS LAST LIMIT 1"
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    # Every store statement is a short indexed one: starting parallel workers only adds latency (tens of ms
    # on a busy host for a ListSecrets page).
    await conn.execute("SET max_parallel_workers_per_gather = 0")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await db.create_pool(
        dsn, service="store", min_size=min_size, max_size=max_size, init=_init_connection
    )


def date_of(raw: Any) -> date | None:
    return raw if isinstance(raw, date) else None


class Statements:
    """A group of statements run on the connection of the current write transaction."""

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


class Reads:
    """Single-statement reads on the pool (no transaction of their own unless they say so)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
