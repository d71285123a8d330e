"""The harness really starts PostgreSQL and Redis (not mocks): these fail if either is not a live server."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.asyncio as aioredis


async def test_postgres_is_real(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        version = await conn.fetchval("SHOW server_version_num")
        assert int(version) >= 150000
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await conn.close()


async def test_redis_is_real_and_has_streams(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        await client.xgroup_create("s", "g", id="0", mkstream=True)
        await client.xadd("s", {"k": "v"})
        got: Any = await client.xreadgroup("g", "c", {"s": ">"}, count=1)
        assert got and got[0][1][0][1] == {b"k": b"v"}
    finally:
        await client.aclose()
