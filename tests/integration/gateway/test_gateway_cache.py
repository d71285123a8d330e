"""The caching client and the agent on the real stack (gateway → store → kms, PostgreSQL, TLS): a cached
read sees a new AWSCURRENT (a put, a label moved back) within a second with its TTL at an hour, because the
change stream drops the entry; with the stream cut (its connection goes through a TCP relay the test
closes) the old value is served until the TTL and the new one after it; a resume token the server refuses
clears the cache; the agent answers an HTTP client written against AWS's agent documentation and refuses a
request without the SSRF token as AWS's agent does; ``coffer agent`` runs as a command with a TOML file;
the thread-safe cache and its decorator work from threads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coffer.agent import AgentConfig, start_agent
from coffer.client import AsyncCofferClient
from coffer.client.cache import InjectKeywordedSecretString, SecretCache, SecretCacheConfig, SyncSecretCache
from coffer.core import changes
from coffer.testing.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = "agent-ssrf-token"


async def until_following(client: AsyncCofferClient, cache: SecretCache) -> None:
    """Until the cache's stream delivers: writes to a scratch secret make events (a heartbeat may come
    first)."""
    await cache.start()
    await client.create_secret(name="scratch/ping", secret_string="0")
    n = 0

    async def probe() -> bool:
        nonlocal n
        if not cache.stream_connected.is_set():
            n += 1
            await client.put_secret_value(secret_id="scratch/ping", secret_string=str(n))
            await asyncio.sleep(0.05)
        return cache.stream_connected.is_set()

    await eventually(probe, timeout=30, interval=0.2, message="the cache's change stream delivers")


async def stream_passed(client: AsyncCofferClient, cache: SecretCache) -> None:
    """Until the stream has delivered every change committed so far (events come in commit order: once a
    write made now is seen, everything before it was)."""
    seen: list[str] = []
    cache.event_listeners.append(lambda event: seen.append(event.name))
    try:
        await client.put_secret_value(secret_id="scratch/ping", secret_string="barrier")
        await eventually(lambda: "scratch/ping" in seen, timeout=30, message="the stream passes a write")
    finally:
        cache.event_listeners.pop()


async def test_cached_read_sees_new_value_within_a_second(stack: Any) -> None:
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as client:
        cache = SecretCache(SecretCacheConfig(secret_refresh_interval=3600), client)
        try:
            await until_following(client, cache)
            first = await client.create_secret(name="app/db", secret_string="password-one")
            await stream_passed(client, cache)  # the creation's own events are not what this test is about
            assert await cache.get_secret_string("app/db") == "password-one"
            assert await cache.get_secret_string(first.arn) == "password-one"
            misses = cache.stats.misses
            assert await cache.get_secret_string("app/db") == "password-one"
            assert cache.stats.misses == misses  # served from memory

            second = await client.put_secret_value(secret_id="app/db", secret_string="password-two")
            await eventually(
                lambda: cache.get_secret_string("app/db"),
                until=lambda v: v == "password-two",
                timeout=1.0,
                interval=0.02,
                message="the new AWSCURRENT served",
            )
            assert await cache.get_secret_string(first.arn) == "password-two"
            assert await cache.get_secret_string("app/db", "AWSPREVIOUS") == "password-one"

            # The label moved back by hand (no new version): seen as fast.
            await client.update_secret_version_stage(
                secret_id="app/db",
                version_stage="AWSCURRENT",
                move_to_version_id=first.version_id,
                remove_from_version_id=second.version_id,
            )
            await eventually(
                lambda: cache.get_secret_string("app/db"),
                until=lambda v: v == "password-one",
                timeout=1.0,
                interval=0.02,
                message="AWSCURRENT moved back",
            )
            assert cache.stats.invalidations >= 2
        finally:
            await cache.close()


async def test_sync_cache_and_decorator_from_a_thread(stack: Any) -> None:
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as admin:
        await admin.create_secret(
            name="app/json", secret_string=json.dumps({"username": "u", "password": "p1"})
        )

        def connect() -> AsyncCofferClient:
            return AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials)

        cache = await asyncio.to_thread(SyncSecretCache, SecretCacheConfig(), connect)
        try:
            assert await asyncio.to_thread(cache.wait_connected, 30)

            @InjectKeywordedSecretString("app/json", cache, user="username", password="password")
            def login(user: str, password: str) -> tuple[str, str]:
                return user, password

            assert await asyncio.to_thread(login) == ("u", "p1")
            await admin.put_secret_value(
                secret_id="app/json", secret_string=json.dumps({"username": "u", "password": "p2"})
            )
            await eventually(
                lambda: asyncio.to_thread(login), until=lambda v: v == ("u", "p2"), timeout=5, interval=0.02
            )
        finally:
            await asyncio.to_thread(cache.close)


class Relay:
    """A TCP relay to the gateway that the test can cut (listener and every connection closed)."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def drop(self) -> None:
        """Break every connection made so far (new ones still go through)."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


class SplitClient:
    """Reads straight to the gateway, the change stream through the relay."""

    def __init__(self, direct: AsyncCofferClient, relayed: AsyncCofferClient) -> None:
        self.direct, self.relayed = direct, relayed

    async def get_secret_value(self, **fields: Any) -> Any:
        return await self.direct.get_secret_value(**fields)

    async def describe_secret(self, **fields: Any) -> Any:
        return await self.direct.describe_secret(**fields)

    def watch_secrets(self, **kw: Any) -> AsyncIterator[Any]:
        return self.relayed.watch_secrets(**kw)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_stream_cut_falls_back_to_ttl(stack: Any) -> None:
    relay = Relay(stack.endpoint)
    relayed_endpoint = await relay.start()
    direct = AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials)
    relayed = AsyncCofferClient(relayed_endpoint, stack.ca_file, stack.credentials)
    clock = ManualClock()  # the TTL's passing is the test's to decide, not the machine's speed
    config = SecretCacheConfig(
        secret_refresh_interval=2, watch_retry_delay_base=0.1, watch_retry_delay_max=0.2
    )
    cache = SecretCache(config, SplitClient(direct, relayed), clock=clock)
    try:
        await until_following(direct, cache)
        await direct.create_secret(name="app/cut", secret_string="old")
        await stream_passed(direct, cache)
        assert await cache.get_secret_string("app/cut") == "old"

        await relay.cut()
        await eventually(
            lambda: not cache.stream_connected.is_set(), timeout=30, message="the stream is down"
        )
        await direct.put_secret_value(secret_id="app/cut", secret_string="new")
        failures = cache.stats.stream_failures
        await eventually(
            lambda: cache.stats.stream_failures > failures, timeout=30, message="reconnect fails"
        )
        assert await cache.get_secret_string("app/cut") == "old"  # no event can arrive: the TTL holds

        clock.now += 2.01  # the TTL (a random time in [1, 2] s) has passed
        assert await cache.get_secret_string("app/cut") == "new"
    finally:
        await cache.close()
        await relayed.close()
        await direct.close()


async def test_refused_resume_token_clears_the_cache(stack: Any) -> None:
    relay = Relay(stack.endpoint)
    relayed_endpoint = await relay.start()
    direct = AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials)
    relayed = AsyncCofferClient(relayed_endpoint, stack.ca_file, stack.credentials)
    config = SecretCacheConfig(watch_retry_delay_base=0.05, watch_retry_delay_max=0.1)
    cache = SecretCache(config, SplitClient(direct, relayed))
    try:
        await until_following(direct, cache)
        await direct.create_secret(name="app/resync", secret_string="v1")
        await stream_passed(direct, cache)
        assert await cache.get_secret_string("app/resync") == "v1" and len(cache) == 1
        connects = cache.stats.stream_connects

        # A token from a store whose change log was replaced (another epoch): the server says resync.
        cache._resume_token = changes.encode_token(987654321, 1)
        relay.drop()
        stats = cache.stats
        await eventually(lambda: stats.resyncs == 1, timeout=30, message="the refused token makes a resync")
        assert len(cache) == 0  # what was cached may have missed changes: dropped
        await eventually(lambda: stats.stream_connects > connects, timeout=30, message="following afresh")
        assert cache._resume_token != changes.encode_token(987654321, 1)
        assert await cache.get_secret_string("app/resync") == "v1"
    finally:
        await cache.close()
        await relayed.close()
        await direct.close()
        await relay.cut()


def http_get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """What AWS's agent documentation shows: a GET with the token header."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_agent_serves_aws_agent_clients(stack: Any) -> None:
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as admin:
        created = await admin.create_secret(name="svc/api-key", secret_string='{"key": "k1"}')
        agent_client = AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials)
        agent = await start_agent(
            AgentConfig(log_to_file=False, ttl_seconds=3600), agent_client, TOKEN, port=0
        )
        try:
            base = f"http://127.0.0.1:{agent.port}"
            header = {"X-Aws-Parameters-Secrets-Token": TOKEN}
            status, body = await asyncio.to_thread(
                http_get, f"{base}/secretsmanager/get?secretId=svc/api-key", header
            )
            assert status == 200
            parsed = json.loads(body)
            assert parsed["ARN"] == created.arn and parsed["Name"] == "svc/api-key"
            assert parsed["VersionId"] == created.version_id and parsed["SecretString"] == '{"key": "k1"}'
            assert parsed["VersionStages"] == ["AWSCURRENT"]
            assert isinstance(parsed["CreatedDate"], str) and float(parsed["CreatedDate"]) > 0
            status, body = await asyncio.to_thread(http_get, f"{base}/v1/svc/api-key", header)
            assert status == 200 and json.loads(body)["SecretString"] == '{"key": "k1"}'

            assert await asyncio.to_thread(http_get, f"{base}/v1/svc/api-key", {}) == (403, "Bad Token")
            status, body = await asyncio.to_thread(http_get, f"{base}/v1/svc/missing", header)
            assert status == 400 and json.loads(body)["__type"] == "ResourceNotFoundException"

            await until_following(admin, agent.cache)
            await admin.put_secret_value(secret_id="svc/api-key", secret_string='{"key": "k2"}')

            async def served() -> str:
                _, text = await asyncio.to_thread(http_get, f"{base}/v1/svc/api-key", header)
                return str(json.loads(text).get("SecretString"))

            await eventually(served, until=lambda v: v == '{"key": "k2"}', timeout=1.0, interval=0.02)
        finally:
            await agent.close()


async def test_coffer_agent_command(stack: Any, tmp_path: Path) -> None:
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as admin:
        await admin.create_secret(name="cmd/secret", secret_string="from-the-command")
    config = tmp_path / "agent.toml"
    config.write_text('http_port = 0\nlog_to_file = false\nttl_seconds = "60"\nlog_level = "WARN"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COFFER_", "AWS_"))}
    argv = ["-m", "coffer.cli.main", "agent", "--config", str(config), "--profile", str(stack.profile)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env={**env, "AWS_TOKEN": TOKEN}, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        line = ""
        while "coffer agent listening on" not in line:  # log lines (JSON) go to stderr too
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "the agent exited before listening"
        assert "coffer agent listening on http://127.0.0.1:" in line, line
        base = line.strip().rsplit(" ", 1)[1]
        status, body = await asyncio.to_thread(
            http_get, f"{base}/v1/cmd/secret", {"X-Aws-Parameters-Secrets-Token": TOKEN}
        )
        assert status == 200 and json.loads(body)["SecretString"] == "from-the-command"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0


async def test_coffer_agent_refuses_without_token_variable(stack: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COFFER_", "AWS_"))}
    argv = ["-m", "coffer.cli.main", "agent", "--profile", str(stack.profile)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 253
    assert "Could not read SSRF token variable(s) ['AWS_TOKEN', 'AWS_SESSION_TOKEN'" in stderr.decode()
