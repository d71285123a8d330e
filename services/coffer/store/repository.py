"""The store's SQL, composed from one module per area (``coffer.store.sql``).

Reads are single round trips. Writes happen inside :meth:`StoreRepository.transaction`, one transaction per
API call: the caller locks the secret row ``FOR UPDATE``, does its work through :class:`StoreTx`, and the
last statement (``record_change``) bumps the secret's change sequence, writes the outbox row and
``NOTIFY coffer_store_changed`` (delivered at commit). Any exception rolls everything back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from coffer.store.sql.common import CHANGED_CHANNEL, ROTATION_CHANNEL, create_pool, rules_json, tags_json
from coffer.store.sql.housekeeping import HousekeepingReads
from coffer.store.sql.listing import ListingReads
from coffer.store.sql.migrations import apply_migrations
from coffer.store.sql.replication import ReplicationReads, ReplicationStatements
from coffer.store.sql.rotation import RotationReads, RotationStatements
from coffer.store.sql.secrets import SecretReads, SecretStatements
from coffer.store.sql.watch import WatchReads, WatchStatements

__all__ = [
    "CHANGED_CHANNEL",
    "ROTATION_CHANNEL",
    "ReplicationRepository",
    "StoreRepository",
    "StoreTx",
    "apply_migrations",
    "create_pool",
    "rules_json",
    "tags_json",
]


class StoreTx(SecretStatements, RotationStatements, ReplicationStatements, WatchStatements):
    """Every statement available inside one write transaction."""


class StoreRepository(SecretReads, RotationReads, ListingReads, HousekeepingReads, WatchReads):
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield StoreTx(conn)


class ReplicationRepository(ReplicationReads):
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTx]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield StoreTx(conn)
