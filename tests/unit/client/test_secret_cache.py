"""``coffer.client.cache`` over a fake client (pure logic: no gateway): hits and misses, AWS's TTL with its
jitter, the LRU bound, entries dropped by change events (by name or ARN, heartbeats ignored), a read that
raced an event not kept, the stream's resume token, a refused token clearing everything, TTL-only while the
stream is down, error back-off with stale values for transient failures only, None for a stage no version
carries, the decorators (sync and async, methods), the config's checks, the thread-safe facade, and no value
in any log line."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from coffer.client.cache import (
    InjectKeywordedSecretString,
    InjectSecretString,
    SecretCache,
    SecretCacheConfig,
    SyncSecretCache,
)
from coffer.core import errors
from coffer.testing.cache_fakes import FakeSecretsClient as FakeClient
from coffer.testing.wait import eventually

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache_over(client: FakeClient, clock: Clock | None = None, **options: Any) -> SecretCache:
    options.setdefault("watch_retry_delay_base", 0.01)
    options.setdefault("watch_retry_delay_max", 0.02)
    return SecretCache(SecretCacheConfig(**options), client, clock=clock or Clock())


async def settled(cache: SecretCache, stat: str, value: int) -> None:
    await eventually(lambda: getattr(cache.stats, stat) >= value, timeout=5, message=stat)


async def test_hit_after_miss_and_string_binary() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    client.put("app/bin", b"\x00\x01")
    async with cache_over(client, watch=False) as cache:
        assert await cache.get_secret_string("app/db") == "one"
        assert await cache.get_secret_string("app/db") == "one"
        assert await cache.get_secret_binary("app/db") is None
        assert await cache.get_secret_binary("app/bin") == b"\x00\x01"
        assert await cache.get_secret_string("app/bin") is None
        value = await cache.get_secret_value("app/db")
        assert value is not None and value.arn == client.arn("app/db")
        assert value.version_stages == ("AWSCURRENT",)
        assert "one" not in repr(value)
    assert len(client.calls) == 2 and cache.stats.hits == 4 and cache.stats.misses == 2


async def test_ttl_with_aws_jitter() -> None:
    client, clock = FakeClient(), Clock()
    client.put("app/db", "one")
    async with cache_over(client, clock, watch=False, secret_refresh_interval=100) as cache:
        assert await cache.get_secret_string("app/db") == "one"
        client.put("app/db", "two")
        clock.now += 49  # due after a random time in [50, 100]
        assert await cache.get_secret_string("app/db") == "one"
        clock.now += 52
        assert await cache.get_secret_string("app/db") == "two"
    assert len(client.calls) == 2


async def test_ttl_zero_always_asks() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    async with cache_over(client, watch=False, secret_refresh_interval=0) as cache:
        for _ in range(3):
            assert await cache.get_secret_string("app/db") == "one"
    assert len(client.calls) == 3


async def test_lru_evicts_least_recently_used() -> None:
    client = FakeClient()
    for name in ("a", "b", "c"):
        client.put(name, name)
    async with cache_over(client, watch=False, max_cache_size=2) as cache:
        await cache.get_secret_string("a")
        await cache.get_secret_string("b")
        await cache.get_secret_string("a")  # b is now the least recently used
        await cache.get_secret_string("c")
        assert len(cache) == 2
        client.calls.clear()
        await cache.get_secret_string("a")
        assert client.calls == []
        await cache.get_secret_string("b")
        assert [c["secret_id"] for c in client.calls] == ["b"]


async def test_concurrent_misses_ask_once() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    client.gate = asyncio.Event()
    async with cache_over(client, watch=False) as cache:
        reads = [asyncio.create_task(cache.get_secret_string("app/db")) for _ in range(20)]
        await eventually(lambda: len(client.calls) == 1, timeout=5)
        client.gate.set()
        assert await asyncio.gather(*reads) == ["one"] * 20
    assert len(client.calls) == 1


@pytest.mark.parametrize("by_arn", [True, False])
async def test_event_drops_entries_of_its_secret(by_arn: bool) -> None:
    client = FakeClient()
    client.put("app/db", "one")
    client.put("other", "x")
    async with cache_over(client) as cache:
        await client.watching.wait()
        await client.push("Heartbeat", "", "t0", arn=False)
        await cache.stream_connected.wait()
        secret_id = client.arn("app/db") if by_arn else "app/db"
        assert await cache.get_secret_string(secret_id) == "one"
        assert await cache.get_secret_string(secret_id, "AWSCURRENT") == "one"
        assert await cache.get_secret_string("other") == "x"
        client.put("app/db", "two")
        await client.push("Heartbeat", "", "t1", arn=False)  # a heartbeat drops nothing
        await client.push("StagesChanged", "app/db", "t2")
        await settled(cache, "invalidations", 1)
        assert await cache.get_secret_string(secret_id) == "two"
        assert await cache.get_secret_string("other") == "x"
    assert [c["secret_id"] for c in client.calls].count("other") == 1
    assert cache.stats.invalidations == 1


async def test_event_by_name_only_drops_entry_read_by_arn() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    async with cache_over(client) as cache:
        await client.watching.wait()
        assert await cache.get_secret_string(client.arn("app/db")) == "one"
        client.put("app/db", "two")
        await client.push("VersionCreated", "app/db", "t1", arn=False)
        await settled(cache, "invalidations", 1)
        assert await cache.get_secret_string(client.arn("app/db")) == "two"


async def test_read_racing_an_event_is_served_not_kept() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    async with cache_over(client) as cache:
        await client.watching.wait()
        await client.push("Heartbeat", "", "t0", arn=False)
        await cache.stream_connected.wait()
        client.gate = asyncio.Event()
        read = asyncio.create_task(cache.get_secret_string("app/db"))
        await eventually(lambda: len(client.calls) == 1, timeout=5)
        await client.push("Deleted", "app/db", "t1")
        await eventually(lambda: cache._epoch >= 1, timeout=5)
        client.gate.set()
        assert await read == "one"  # what the service said when asked
        assert len(cache) == 0  # but not kept: the event may be about a later change
        await cache.get_secret_string("app/db")
    assert len(client.calls) == 2


async def test_reconnect_resumes_with_last_token_and_ttl_bounds_meanwhile() -> None:
    client, clock = FakeClient(), Clock()
    client.put("app/db", "one")
    async with cache_over(client, clock, secret_refresh_interval=10) as cache:
        await client.watching.wait()
        await client.push("Heartbeat", "", "t7", arn=False)
        await cache.stream_connected.wait()
        assert await cache.get_secret_string("app/db") == "one"
        await client.fail(errors.Unavailable("gateway gone"))
        await eventually(lambda: not cache.stream_connected.is_set(), timeout=5)
        client.put("app/db", "two")  # no event: the stream is down
        assert await cache.get_secret_string("app/db") == "one"
        clock.now += 11
        assert await cache.get_secret_string("app/db") == "two"
        await eventually(lambda: len(client.watch_calls) >= 2, timeout=5)
        assert client.watch_calls[:2] == [None, "t7"]
        assert cache.stats.stream_failures >= 1


async def test_refused_token_clears_everything_and_starts_afresh() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    async with cache_over(client) as cache:
        await client.watching.wait()
        await client.push("Heartbeat", "", "t1", arn=False)
        await cache.stream_connected.wait()
        assert await cache.get_secret_string("app/db") == "one"
        await client.fail(errors.Unavailable("gone"))
        await eventually(lambda: len(client.watch_calls) == 2 and client.watching.is_set(), timeout=5)
        assert len(cache) == 1  # a plain reconnect keeps the entries: the token resumes
        await client.fail(errors.InvalidRequest("The resume token is too old: resync."))
        await eventually(lambda: len(client.watch_calls) >= 3, timeout=5)
        assert client.watch_calls[2] is None
        assert len(cache) == 0 and cache.stats.resyncs == 1


async def test_transient_failure_serves_stale_value_with_backoff() -> None:
    client, clock = FakeClient(), Clock()
    client.put("app/db", "one")
    cfg = {"watch": False, "secret_refresh_interval": 10, "exception_retry_delay_base": 2}
    async with cache_over(client, clock, **cfg) as cache:
        assert await cache.get_secret_string("app/db") == "one"
        clock.now += 11
        client.failure = errors.Unavailable("down")
        assert await cache.get_secret_string("app/db") == "one"
        assert await cache.get_secret_string("app/db") == "one"  # backing off: not asked again
        assert len(client.calls) == 2
        clock.now += 2.1  # 2 · 2^0 s passed
        assert await cache.get_secret_string("app/db") == "one"
        assert len(client.calls) == 3
        clock.now += 2.1  # the next delay is 2 · 2^1 = 4 s
        assert await cache.get_secret_string("app/db") == "one"
        assert len(client.calls) == 3
        client.failure = None
        client.put("app/db", "two")
        clock.now += 2
        assert await cache.get_secret_string("app/db") == "two"


async def test_non_transient_failure_is_raised_and_remembered() -> None:
    client, clock = FakeClient(), Clock()
    client.put("app/db", "one")
    async with cache_over(client, clock, watch=False, secret_refresh_interval=10) as cache:
        assert await cache.get_secret_string("app/db") == "one"
        clock.now += 11
        client.failure = errors.AccessDenied("no")
        with pytest.raises(errors.AccessDenied):
            await cache.get_secret_string("app/db")
        with pytest.raises(errors.AccessDenied):
            await cache.get_secret_string("app/db")
        assert len(client.calls) == 2  # the second raise is the stored error (backing off)
        client.failure = None
        with pytest.raises(errors.NotFound):
            await cache.get_secret_string("missing")


async def test_transient_failure_not_served_stale_when_ignore_is_off() -> None:
    client, clock = FakeClient(), Clock()
    client.put("app/db", "one")
    opts = {"watch": False, "secret_refresh_interval": 10, "ignore_transient_errors": False}
    async with cache_over(client, clock, **opts) as cache:
        await cache.get_secret_string("app/db")
        clock.now += 11
        client.failure = errors.Unavailable("down")
        with pytest.raises(errors.Unavailable):
            await cache.get_secret_string("app/db")


async def test_stage_no_version_carries_is_none() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    async with cache_over(client, watch=False) as cache:
        assert await cache.get_secret_string("app/db", "AWSPENDING") is None
        assert await cache.get_secret_binary("app/db", "AWSPENDING") is None
        with pytest.raises(errors.NotFound):
            await cache.get_secret_string("nope", "AWSPENDING")


async def test_refresh_secret_now() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    async with cache_over(client, watch=False) as cache:
        assert await cache.get_secret_string("app/db") == "one"
        client.put("app/db", "two")
        assert await cache.refresh_secret_now("app/db") is True
        assert await cache.get_secret_string("app/db") == "two"
        assert await cache.refresh_secret_now("missing") is False


def test_config_checks() -> None:
    assert SecretCacheConfig().secret_refresh_interval == 3600
    assert SecretCacheConfig().max_cache_size == 1024
    with pytest.raises(TypeError):
        SecretCacheConfig(no_such_option=1)  # type: ignore[call-arg]
    bads = ({"max_cache_size": 0}, {"secret_refresh_interval": -1}, {"exception_retry_growth_factor": 0.5})
    for bad in bads:
        with pytest.raises(errors.InvalidParameter):
            SecretCacheConfig(**bad)


async def test_async_decorators() -> None:
    client = FakeClient()
    client.put("app/db", json.dumps({"username": "app", "password": "pw"}))
    async with cache_over(client, watch=False) as cache:

        @InjectSecretString("app/db", cache)
        async def first(secret: str, extra: int) -> tuple[str, int]:
            return secret, extra

        @InjectKeywordedSecretString("app/db", cache, user="username", password="password")
        async def keyworded(user: str, password: str, other: int = 0) -> tuple[str, str, int]:
            return user, password, other

        @InjectKeywordedSecretString("app/db", cache, user="missing")
        async def missing(user: str) -> str:
            return user

        class Service:
            @InjectSecretString("app/db", cache)
            async def method(self, secret: str) -> str:
                return secret

        assert (await first(3))[1] == 3 and json.loads((await first(3))[0])["username"] == "app"
        assert await keyworded(other=2) == ("app", "pw", 2)
        with pytest.raises(RuntimeError, match="Cached secret does not contain key missing"):
            await missing()
        assert json.loads(await Service().method())["password"] == "pw"


def test_sync_facade_from_threads_and_sync_decorators() -> None:
    loop_client: dict[str, FakeClient] = {}

    def connect() -> FakeClient:
        client = FakeClient()
        client.put("app/db", json.dumps({"username": "app"}))
        client.put("plain", "not json")
        loop_client["c"] = client
        return client

    with SyncSecretCache(SecretCacheConfig(watch=False), connect) as cache:
        results: list[str | None] = []

        def reader() -> None:
            for _ in range(50):
                results.append(cache.get_secret_string("app/db"))

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 200 and set(results) == {json.dumps({"username": "app"})}
        assert len(loop_client["c"].calls) == 1

        @InjectKeywordedSecretString("app/db", cache, user="username")
        def keyworded(user: str) -> str:
            return user

        @InjectKeywordedSecretString("plain", cache, user="username")
        def not_json(user: str) -> str:
            return user

        @InjectSecretString("plain", cache)
        def first(secret: str) -> str:
            return secret

        assert keyworded() == "app"
        assert first() == "not json"
        with pytest.raises(RuntimeError, match="Cached secret is not valid JSON"):
            not_json()


async def test_sync_function_with_async_cache_is_refused() -> None:
    client = FakeClient()
    client.put("app/db", "one")
    async with cache_over(client, watch=False) as cache:

        @InjectSecretString("app/db", cache)
        def sync_func(secret: str) -> str:
            return secret

        with pytest.raises(TypeError, match="SyncSecretCache"):
            sync_func()


async def test_no_value_in_logs() -> None:
    client, clock = FakeClient(), Clock()
    client.put("app/db", "hunter2-secret")
    with capture_logs() as captured:
        async with cache_over(client, clock, secret_refresh_interval=10) as cache:
            await client.watching.wait()
            await client.push("Heartbeat", "", "t0", arn=False)
            await cache.stream_connected.wait()
            await cache.get_secret_string("app/db")
            await client.push("VersionCreated", "app/db", "t1")
            await settled(cache, "invalidations", 1)
            await cache.get_secret_string("app/db")
            clock.now += 11
            client.failure = errors.Unavailable("down")
            await cache.get_secret_string("app/db")
            await client.fail(errors.InvalidRequest("too old"))
            await settled(cache, "stream_failures", 1)
    assert captured, "the cache logs what it does"
    assert "hunter2" not in repr(captured)
