"""PostgreSQL restarted twice under a mixed load (issue 13): once with a fast shutdown, once with an immediate
one (no checkpoint: crash recovery at start). Writers put values with their own ClientRequestTokens through
a client that retries (as AWS's SDKs' standard mode), readers read; a ledger keeps every write the service
acknowledged. Afterwards: every acknowledged write is there with its value, no token made two versions,
every failure the callers saw was a retryable "unavailable"-class error (never INTERNAL), and the services,
never restarted, serve again within seconds of the database's return."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import pytest

from coffer.client import AsyncCofferClient
from coffer.core import errors
from coffer.embedded import EmbeddedPostgres
from coffer.testing.stack import ServiceStack

from .conftest import LONG

pytestmark = pytest.mark.integration

#: Enough secrets that no secret reaches AWS's 100 versions a day however long the load runs.
SECRETS = [f"chaos/pg-{i}" for i in range(64 if LONG else 8)]
WRITERS, READERS = 6, 4
#: What a caller may see while the database is away: retryable refusals, never INTERNAL.
ALLOWED_CODES = {errors.Unavailable.default_code, "ThrottlingException"}


@dataclass
class Ledger:
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (secret, value)
    unacked: dict[str, tuple[str, str]] = field(default_factory=dict)  # failed: applied once, or not at all
    errors: Counter[str] = field(default_factory=Counter)
    reads: int = 0
    last_write_ok: float = 0.0


def client_of(stack: ServiceStack, *, attempts: int) -> AsyncCofferClient:
    assert stack.gateway is not None and stack.admin is not None
    return AsyncCofferClient(
        f"127.0.0.1:{stack.gateway.port}", stack.ca_file, stack.admin, max_attempts=attempts, timeout=10
    )


async def load(client: AsyncCofferClient, ledger: Ledger, stop: asyncio.Event) -> None:
    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            secret, token = SECRETS[(w + i) % len(SECRETS)], str(uuid.uuid4())
            value = f"w{w}-{i}-{token[:8]}"
            i += 1
            try:
                out = await client.put_secret_value(
                    secret_id=secret, secret_string=value, client_request_token=token
                )
            except errors.CofferError as exc:
                ledger.errors[exc.code] += 1
                ledger.unacked[token] = (secret, value)
                continue
            assert out.version_id == token
            ledger.acked[token] = (secret, value)
            ledger.last_write_ok = time.monotonic()

    async def reader(r: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                await client.get_secret_value(secret_id=SECRETS[(r + i) % len(SECRETS)])
                ledger.reads += 1
            except errors.CofferError as exc:
                ledger.errors[exc.code] += 1
            i += 1

    await asyncio.gather(*(writer(w) for w in range(WRITERS)), *(reader(r) for r in range(READERS)))


async def wait_for_a_write_after(ledger: Ledger, since: float, within: float) -> float:
    """Seconds from ``since`` to the first acknowledged write after it."""
    deadline = since + within
    while time.monotonic() < deadline:
        if ledger.last_write_ok > since:
            return ledger.last_write_ok - since
        await asyncio.sleep(0.05)
    raise AssertionError(f"no write succeeded within {within} s of PostgreSQL's return")


async def test_postgres_restarted_twice_under_load_loses_nothing(
    chaos_stack: ServiceStack, own_pg: EmbeddedPostgres
) -> None:
    stack = chaos_stack
    store, gateway = stack.store, stack.gateway
    setup = client_of(stack, attempts=3)
    for name in SECRETS:
        await setup.create_secret(name=name, secret_string="initial")
    ledger = Ledger()
    stop = asyncio.Event()
    # Retries ride over most of each restart; those that run out are recorded (their write may or may not
    # have been applied: the ledger checks both ways).
    worker = client_of(stack, attempts=4)
    running = asyncio.ensure_future(load(worker, ledger, stop))
    steady = 3.0 if LONG else 1.0
    recovery: dict[str, float] = {}
    try:
        await asyncio.sleep(steady)
        for mode in ("fast", "immediate"):
            before = len(ledger.acked)
            await asyncio.to_thread(own_pg.restart, mode)
            back = time.monotonic()
            recovery[mode] = await wait_for_a_write_after(ledger, back, within=30.0)
            await asyncio.sleep(steady)
            assert len(ledger.acked) > before  # the load went on after the restart
    finally:
        stop.set()
        await running
    print(
        f"\nchaos/postgres: {len(ledger.acked)} writes acknowledged, {len(ledger.unacked)} failed, "
        f"{ledger.reads} reads; errors {dict(ledger.errors)}; first write after each restart "
        + ", ".join(f"{m} {s:.2f} s" for m, s in recovery.items())
    )

    # Only retryable refusals were seen, never INTERNAL/UNKNOWN.
    assert set(ledger.errors) <= ALLOWED_CODES, ledger.errors
    # The same services (never restarted) serve.
    assert stack.store is store and stack.gateway is gateway
    checker = client_of(stack, attempts=1)
    # Every acknowledged write is there, with its value.
    for token, (secret, value) in ledger.acked.items():
        got = await checker.get_secret_value(secret_id=secret, version_id=token)
        assert got.secret_string == value, token
    # Each token made at most one version; nothing but tokens we sent (and the first versions) exists.
    database_url = stack.env["COFFER_DATABASE_URL"]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT s.name, v.version_id FROM store.versions v JOIN store.secrets s ON s.id = v.secret_id"
            " WHERE s.name = ANY($1::text[])",
            SECRETS,
        )
    finally:
        await conn.close()
    sent = {**ledger.unacked, **ledger.acked}
    by_token = Counter(r["version_id"] for r in rows)
    assert all(n == 1 for n in by_token.values())
    extra = [r for r in rows if r["version_id"] not in sent]
    assert len(extra) == len(SECRETS)  # the initial versions
    for r in rows:
        if r["version_id"] in sent:
            assert sent[r["version_id"]][0] == r["name"]
    # A write the caller saw fail was applied at most once (it is either there, once, or absent).
    applied_unacked = [t for t in ledger.unacked if t in by_token]
    print(f"chaos/postgres: {len(applied_unacked)} of the failed writes had been applied (each once)")
    await setup.close()
    await worker.close()
    await checker.close()
