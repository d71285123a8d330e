"""The rotation service process (composition root).

Today it is deliberately small: it proves its dependencies at start-up (Redis answers PING; the channel to
the store is built with the ``rotation`` identity), serves the standard gRPC health service over mTLS, and
stops gracefully on SIGTERM/SIGINT. Schedules, the Redis Streams worker pool and the rotators arrive in a
later issue; nothing here pretends to rotate anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from coffer import logs
from coffer.core import errors
from coffer.rpc.channel import secure_channel
from coffer.rpc.server import (
    PeerPolicy,
    RunningServer,
    service_main,
    start_server,
)
from coffer.rpc.tls import TlsFiles
from coffer.settings import Settings

log = logs.get_logger("coffer.rotation")

#: No service calls the rotation service yet: only the operator's health checks get in (PeerPolicy.allows).
ROTATION_PEERS = PeerPolicy(default=frozenset())


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


@dataclass
class RotationRuntime:
    server: RunningServer
    redis: aioredis.Redis
    store_channel: grpc.aio.Channel

    @property
    def port(self) -> int:
        return self.server.port

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Stop serving (health goes NOT_SERVING first), then close the store channel and the Redis pool."""
        try:
            await self.server.stop(grace)
        finally:
            try:
                await self.store_channel.close()
            finally:
                await self.redis.aclose()


async def connect_redis(url: str) -> aioredis.Redis:
    """A Redis client that answered PING, or ``errors.Unavailable`` naming the server that did not answer."""
    if not url:
        raise errors.Unavailable("The rotation service needs Redis: set COFFER_REDIS_URL (redis://...).")
    client: aioredis.Redis = aioredis.from_url(url, socket_connect_timeout=5.0)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise errors.Unavailable(
            f"Redis at {redact_url(url)} is unreachable ({type(exc).__name__}: {exc}); "
            "start it or fix COFFER_REDIS_URL."
        ) from None
    return client


def _no_services(_server: grpc.aio.Server) -> Iterable[str]:
    # The rotation API (a later issue) registers here; for now only the health service is served.
    return ()


async def serve(settings: Settings) -> RotationRuntime:
    redis = await connect_redis(settings.redis_url)
    store_channel = secure_channel(
        settings.store_addr, TlsFiles.for_identity(settings.pki_dir, "rotation"), server_name="store"
    )
    try:
        server = await start_server(
            service="rotation",
            bind=settings.rotation_addr,
            tls=TlsFiles.for_identity(settings.pki_dir, "rotation"),
            register=_no_services,
            peers=ROTATION_PEERS,
        )
    except BaseException:
        await store_channel.close()
        await redis.aclose()
        raise
    log.info(
        "rotation.ready",
        port=server.port,
        redis=redact_url(settings.redis_url),
        store=settings.store_addr,
    )
    return RotationRuntime(server=server, redis=redis, store_channel=store_channel)


def main() -> None:
    service_main("rotation", serve)


if __name__ == "__main__":
    main()
