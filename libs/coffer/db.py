"""asyncpg pools as every Coffer service makes them.

Connections go back to the pool without asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``, unlocking
advisory locks: one more round trip on every release, ~15 % of the store's CPU per read). So code that uses a
pooled connection must leave no session state behind: ``SET LOCAL``, transaction-scoped advisory locks, and a
dedicated connection (not a pooled one) for LISTEN or session locks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from coffer import metrics
from coffer.core import errors


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None


async def create_pool(
    dsn: str,
    *,
    service: str,
    min_size: int = 1,
    max_size: int = 10,
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> asyncpg.Pool:
    if not dsn:
        raise errors.Unavailable(f"{service}: COFFER_DATABASE_URL is not set")
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=init, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise errors.Unavailable(
            f"{service}: cannot connect to PostgreSQL: {type(exc).__name__}: {exc}"
        ) from exc
    metrics.watch_pool(service, pool)
    return pool
