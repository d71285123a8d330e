"""Running the agent: in-process (``start_agent``: a bench, a test) or as ``coffer agent`` (``run_agent``:
until SIGINT/SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from coffer import logs
from coffer.agent.config import LOG_FILE, AgentConfig
from coffer.agent.server import LOOPBACK, Agent
from coffer.client.cache import CacheClient, SecretCache, SecretCacheConfig


def cache_config(config: AgentConfig) -> SecretCacheConfig:
    """The cache the agent's keys describe: ``ttl_seconds`` is the refresh interval (0: every read asks the
    service), ``cache_size`` the LRU size, ``ignore_transient_errors`` as AWS's agent."""
    return SecretCacheConfig(
        max_cache_size=config.cache_size,
        secret_refresh_interval=config.ttl_seconds,
        ignore_transient_errors=config.ignore_transient_errors,
    )


class _OwnedAgent(Agent):
    """An agent that closes its cache (and the cache's client) with itself."""

    async def close(self) -> None:
        await super().close()
        await self.cache.close()


async def start_agent(
    config: AgentConfig, client: CacheClient, token: str, *, host: str = LOOPBACK, port: int | None = None
) -> Agent:
    """An agent serving from a new cache over ``client`` (closed with the agent), listening already;
    ``port=0`` picks a free port (``agent.port``)."""
    cache = SecretCache(cache_config(config), client)
    cache._owns_client = True
    await cache.start()
    agent = _OwnedAgent(config, cache, token, host=host, port=port)
    try:
        await agent.start()
    except BaseException:
        await cache.close()
        raise
    return agent


def configure_logging(config: AgentConfig) -> None:
    level = {"WARN": "warning", "NONE": "critical"}.get(config.log_level, config.log_level.lower())
    logs.configure(service="agent", level=level, log_file=Path(LOG_FILE) if config.log_to_file else None)


async def run_agent(
    config: AgentConfig,
    connect: Callable[[], Any],
    token: str,
    *,
    err: TextIO,
    ready: Callable[[Agent], None] | None = None,
) -> int:
    """``coffer agent``: check the credentials (``validate_credentials``), serve until SIGINT/SIGTERM."""
    client = connect()
    if config.validate_credentials:
        try:
            await client.sts.get_caller_identity()
        except Exception:
            await client.close()
            raise
    agent = await start_agent(config, client, token)
    print(f"coffer agent listening on http://{LOOPBACK}:{agent.port}", file=err, flush=True)
    if ready is not None:
        ready(agent)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await agent.close()
    return 0
