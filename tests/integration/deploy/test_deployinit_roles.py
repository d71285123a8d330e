"""coffer.deployinit --roles against a real PostgreSQL: the kms and store log in with the given passwords."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from coffer import dbroles, deployinit

pytestmark = pytest.mark.integration


async def test_roles_are_provisioned_with_the_given_passwords(database_url: str) -> None:
    env = {
        "COFFER_ADMIN_DATABASE_URL": database_url,
        "COFFER_KMS_DB_PASSWORD": "kms-pass-1",
        "COFFER_STORE_DB_PASSWORD": "store-pass-1",
    }
    for _ in range(2):  # idempotent
        assert await asyncio.to_thread(deployinit.main, ["--roles"], env) == 0
    database = dbroles.database_of(database_url)
    for service, password in (("kms", "kms-pass-1"), ("store", "store-pass-1")):
        role = dbroles.role_name(database, service)
        conn = await asyncpg.connect(dbroles.dsn_for(database_url, user=role, password=password))
        try:
            assert await conn.fetchval("SELECT current_user") == role
            assert (
                await conn.fetchval(
                    "SELECT nspname FROM pg_namespace WHERE nspowner = "
                    "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
                )
                == service
            )
        finally:
            await conn.close()
