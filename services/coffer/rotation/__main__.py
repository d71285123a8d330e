"""The rotation service process (composition root).

It proves its dependencies at start-up (Redis answers PING; the channel to the store is built with the
``rotation`` identity; the public API is reached as role coffer-rotation, assumed through STS with IAM user
coffer-rotation's access key when the first rotation call needs it), then
runs the scheduler (``scheduler.py``: ClaimDueRotations on NOTIFY and every
``COFFER_ROTATION_POLL_SECONDS``, jobs onto the Redis stream) and ``COFFER_ROTATION_WORKERS`` workers
(``worker.py``), serves the standard gRPC health service over mTLS, and stops gracefully on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from coffer import logs, metrics, redisconn
from coffer.core import errors
from coffer.loops import cancel_and_wait, run_forever
from coffer.rotation.api import GatewaySecretsApi
from coffer.rotation.control import StoreRotationControl
from coffer.rotation.queue import JobQueue
from coffer.rotation.rotators import RotatorRegistry
from coffer.rotation.scheduler import Scheduler
from coffer.rotation.worker import Worker, WorkerPool, new_worker_id
from coffer.rpc.channel import secure_channel
from coffer.rpc.server import (
    PeerPolicy,
    RunningServer,
    service_main,
    start_server,
)
from coffer.rpc.tls import TlsFiles
from coffer.settings import Settings
from coffer.targets import TargetGuard

log = logs.get_logger("coffer.rotation")
#: How often the rotation queue gauges are read from Redis.
QUEUE_GAUGE_SECONDS = 5.0

#: No service calls the rotation service yet: only the operator's health checks get in (PeerPolicy.allows).
ROTATION_PEERS = PeerPolicy(default=frozenset())


@dataclass
class RotationRuntime:
    server: RunningServer
    redis: aioredis.Redis
    store_channel: grpc.aio.Channel
    queue: JobQueue | None = None
    scheduler: Scheduler | None = None
    pool: WorkerPool | None = None
    api: GatewaySecretsApi | None = None
    _scheduler_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _gauges_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return self.server.port

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Stop the scheduler and the workers, stop serving (health goes NOT_SERVING first), then close the
        gateway client, the store channel and the Redis pool."""
        try:
            await cancel_and_wait(self._scheduler_task, self._gauges_task, logger=log)
            if self.pool is not None:
                await self.pool.stop()
            await self.server.stop(grace)
        finally:
            try:
                if self.api is not None:
                    await self.api.aclose()
                await self.store_channel.close()
            finally:
                await self.redis.aclose()


async def connect_redis(url: str) -> aioredis.Redis:
    """A Redis client that answered PING, or ``errors.Unavailable`` naming the server that did not answer."""
    if not url:
        raise errors.Unavailable("The rotation service needs Redis: set COFFER_REDIS_URL (redis://...).")
    try:
        client = redisconn.client(url, socket_connect_timeout=5.0)
    except ValueError as exc:
        raise errors.Unavailable(f"COFFER_REDIS_URL: {exc}") from None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise errors.Unavailable(
            f"Redis at {redisconn.redact(url)} is unreachable ({type(exc).__name__}: {exc}); "
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
            health_bind=settings.health_addr or None,
            metrics_bind=settings.metrics_addr or None,
            tls=TlsFiles.for_identity(settings.pki_dir, "rotation"),
            register=_no_services,
            peers=ROTATION_PEERS,
        )
    except BaseException:
        await store_channel.close()
        await redis.aclose()
        raise
    runtime = RotationRuntime(server=server, redis=redis, store_channel=store_channel)
    if settings.rotation_access_key_id or settings.rotation_credentials_file is not None:
        start_rotation_work(runtime, settings)
    else:
        log.warning(
            "rotation.no_token",
            detail="COFFER_ROTATION_ACCESS_KEY_ID is not set: serving health only, no rotations will run.",
        )
    log.info(
        "rotation.ready",
        port=server.port,
        redis=redisconn.redact(settings.redis_url),
        store=settings.store_addr,
        workers=len(runtime.pool.workers) if runtime.pool else 0,
    )
    return runtime


def start_rotation_work(runtime: RotationRuntime, settings: Settings) -> None:
    """The scheduler and the worker pool, on the runtime's Redis and store channel."""
    control = StoreRotationControl(runtime.store_channel)
    queue = JobQueue(runtime.redis, prefix=settings.rotation_stream_prefix)
    api = GatewaySecretsApi.from_settings(settings)
    registry = RotatorRegistry(
        functions=api,
        default_ca_pem=(settings.pki_dir / "ca.crt").read_bytes(),
        targets=TargetGuard.from_settings(settings),
        client_identity=TlsFiles.for_identity(settings.pki_dir, "rotation")._pair(),
    )
    runtime.api = api
    runtime.queue = queue
    runtime.scheduler = Scheduler(
        control=control,
        queue=queue,
        poll_seconds=settings.rotation_poll_seconds,
    )
    runtime.pool = WorkerPool(
        [
            Worker(
                worker_id=new_worker_id(i),
                queue=queue,
                control=control,
                registry=registry,
                api=api,
                lease_seconds=settings.rotation_lease_seconds,
            )
            for i in range(max(1, settings.rotation_workers))
        ]
    )
    runtime.pool.start()
    runtime._scheduler_task = asyncio.create_task(runtime.scheduler.run(), name="rotation-scheduler")
    runtime._gauges_task = asyncio.create_task(_queue_gauges(queue), name="rotation-queue-gauges")


async def _queue_gauges(queue: JobQueue, interval: float = QUEUE_GAUGE_SECONDS) -> None:
    """Keep ``coffer_rotation_queue_depth`` and ``coffer_rotation_dead_letters`` current."""

    async def once() -> None:
        waiting, dead = await queue.depth()
        metrics.ROTATION_QUEUE_DEPTH.labels("rotation").set(waiting)
        metrics.ROTATION_DEAD_LETTERS.labels("rotation").set(dead)

    await run_forever(once, name="rotation.queue_gauges", interval=interval, logger=log)


def main() -> None:
    service_main("rotation", serve)


if __name__ == "__main__":
    main()
