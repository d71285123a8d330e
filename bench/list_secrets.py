"""ListSecrets at scale (part of `make bench`): fills the bench's throwaway deployment with N secrets written
straight into the store's tables (INSERT ... SELECT generate_series: realistic names, descriptions and tags,
a valueless AWSCURRENT version each, 1% scheduled for deletion), lets the store's own code compute their list
terms, then times pages of MaxResults 100 through the whole stack (client, gateway, store): with and without
filters, first page and a deep one (the NextToken of the page after the first half). Prints p50/p99 in ms."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench.load import _percentile
from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.core import listing
from coffer.core.listing import ListFilter
from coffer.store.repository import StoreRepository, create_pool

PAGE = 100
SAMPLES = 60

_FILL_SQL = """
WITH src AS (
    SELECT i,
           (ARRAY['prod', 'staging', 'dev'])[1 + i % 3] AS env,
           format('team-%s', i % 40) AS team,
           (ARRAY['postgres', 'mysql', 'redis', 'api key', 'oauth client', 'tls cert'])[1 + i % 6] AS kind
    FROM generate_series($4::int + 1, $4::int + $3::int) AS i
)
INSERT INTO store.secrets (arn, name, region, description, tags, created_at, last_changed_at,
                           deleted_at, deletion_date, terms_indexed)
SELECT format('arn:aws:secretsmanager:%s:%s:secret:%s/%s/service-%s-%s', $1::text, $2::text, env, team, i,
              lpad(to_hex(i), 6, '0')),
       format('%s/%s/service-%s', env, team, i),
       $1::text,
       format('%s credentials of service %s for %s (%s)', initcap(kind), i % 997, team, env),
       jsonb_build_array(
           jsonb_build_object('Key', 'team', 'Value', team),
           jsonb_build_object('Key', 'env', 'Value', env),
           jsonb_build_object('Key', 'cost-center', 'Value', format('cc-%s', i % 200)),
           jsonb_build_object('Key', 'owner', 'Value', format('user%s@example.com', i % 1000))),
       $5::timestamptz + i * interval '1 second',
       $5::timestamptz + i * interval '1 second',
       CASE WHEN i % 100 = 0 THEN $5::timestamptz + interval '200 days' END,
       CASE WHEN i % 100 = 0 THEN $5::timestamptz + interval '230 days' END,
       false
FROM src
"""

_VERSIONS_SQL = """
WITH v AS (
    INSERT INTO store.versions (secret_id, version_id, created_at)
    SELECT id, md5(arn), created_at FROM store.secrets WHERE NOT terms_indexed
    RETURNING secret_id, version_id
)
INSERT INTO store.labels (secret_id, label, version_id) SELECT secret_id, 'AWSCURRENT', version_id FROM v
"""


async def fill(admin_url: str, store_dsn: str, *, count: int, region: str, account: str) -> float:
    """Write ``count`` secrets; returns the seconds it took (insert + list terms)."""
    t0 = time.perf_counter()
    conn = await asyncpg.connect(admin_url)
    try:
        start = await conn.fetchval("SELECT COALESCE(max(id), 0) FROM store.secrets")
        step = 20_000
        for first in range(0, count, step):
            async with conn.transaction():
                await conn.execute(
                    _FILL_SQL,
                    region,
                    account,
                    min(step, count - first),
                    start + first,
                    datetime(2025, 1, 1, tzinfo=UTC),
                )
                await conn.execute(_VERSIONS_SQL)
            # the store's own code computes the list terms (what it does at start for older rows)
            pool = await create_pool(store_dsn, max_size=2)
            try:
                await StoreRepository(pool).index_missing_terms(batch=2000)
            finally:
                await pool.close()
        await conn.execute("ANALYZE store.secrets; ANALYZE store.list_terms; ANALYZE store.labels")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def deep_token(
    store_dsn: str, filters: list[ListFilter], sort_by: str | None, *, limit: int
) -> tuple[str | None, int]:
    """The NextToken a caller holds after reading half of this listing, and the listing's length (found with
    the store's own page query, once, outside the measurement)."""
    pool = await create_pool(store_dsn, max_size=1)
    try:
        cur = listing.cursor(filters, sort_by=sort_by, sort_order=None, next_token=None, scope="list:False")
        rows = await StoreRepository(pool).list_page(filters, cur, include_deleted=False, limit=limit)
    finally:
        await pool.close()
    depth = len(rows) // 2
    if depth < PAGE:
        return None, len(rows)
    return listing.token_after(cur, listing.sort_key(rows[depth - 1], cur.sort_by)), len(rows)


async def _time(op: Callable[[], Awaitable[Any]]) -> tuple[float, float, int]:
    for _ in range(3):
        await op()
    samples: list[float] = []
    size = 0
    for _ in range(SAMPLES):
        t0 = time.perf_counter()
        resp = await op()
        samples.append((time.perf_counter() - t0) * 1000.0)
        size = len(resp.secret_list)
    samples.sort()
    return statistics.median(samples), _percentile(samples, 0.99), size


CASES: list[tuple[str, list[tuple[str, list[str]]], str | None, str | None]] = [
    ("no filter", [], None, None),
    ("sort by name", [], "name", None),
    ("last-changed desc", [], "last-changed-date", "desc"),
    ("name prefix", [("name", ["prod/team-7"])], None, None),
    ("tag-value", [("tag-value", ["team-7"])], None, None),
    ("tag-key+value", [("tag-key", ["cost-center"]), ("tag-value", ["cc-42"])], None, None),
    ("description", [("description", ["postgres credentials"])], None, None),
    ("all", [("all", ["staging"])], None, None),
    ("negated name", [("name", ["!dev"])], None, None),
]


async def run(client: Any, admin_url: str, store_dsn: str, *, count: int, region: str, account: str) -> None:
    seconds = await fill(admin_url, store_dsn, count=count, region=region, account=account)
    print(
        f"\nListSecrets, {count} secrets (filled in {seconds:.1f} s), MaxResults {PAGE}, {SAMPLES} calls each"
    )
    print(f"{'case':<20} {'matching':>8} {'page':<6} {'p50 ms':>8} {'p99 ms':>8} {'items':>6}")
    for label, spec, sort_by, order in CASES:
        filters = [ListFilter(k, tuple(v)) for k, v in spec]
        extra: dict[str, Any] = {"max_results": PAGE}
        if spec:
            extra["filters"] = [pb.Filter(key=k, values=v) for k, v in spec]
        if sort_by:
            extra["sort_by"] = sort_by
        if order:
            extra["sort_order"] = order
        pages: list[tuple[str, str | None]] = [("first", None)]
        deep, matching = await deep_token(store_dsn, filters, sort_by, limit=count + 1)
        if deep is not None and order is None:
            pages.append(("deep", deep))
        for which, token in pages:
            fields = dict(extra)
            if token:
                fields["next_token"] = token

            async def op(fields: dict[str, Any] = fields) -> Any:
                return await client.list_secrets(**fields)

            p50, p99, items = await _time(op)
            print(f"{label:<20} {matching:>8} {which:<6} {p50:>8.2f} {p99:>8.2f} {items:>6}")
