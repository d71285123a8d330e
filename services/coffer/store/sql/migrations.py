"""The store's schema migrations (``store`` schema, files in ``coffer/store/migrations``), applied by the one
runner of ``coffer.migrations``."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from coffer import migrations

MIGRATIONS = migrations.MigrationSet(
    schema="store",
    directory=Path(__file__).resolve().parent.parent / "migrations",
    lock_id=0x636F6666_6572_01,  # "coffer" + store
)


async def apply_migrations(pool: asyncpg.Pool) -> list[str]:
    """Apply the store's pending migrations; returns the file names applied now."""
    return await migrations.apply_migrations(pool, MIGRATIONS)
