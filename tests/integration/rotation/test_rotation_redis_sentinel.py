"""The rotation service on a Redis that Sentinel manages (issue 11: "Redis with Sentinel"): a real master,
replica and three sentinels (``coffer.testing.sentinel``); ``COFFER_REDIS_URL`` is a ``redis+sentinel://``
URL. Rotations run through the master; the master is SIGKILLed while a rotation is inside setSecret; the
sentinels promote the replica, and that rotation and the next ones complete on it without restarting the
rotation service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from coffer.rotation.queue import JobQueue
from coffer.testing.sentinel import SentinelCluster
from coffer.testing.wait import eventually
from tests.integration.rotation.test_rotation_end_to_end import HeldFunction, wait_attempt

pytestmark = pytest.mark.integration


def stream_length(port: int, password: str, key: str) -> int:
    with redis.Redis(port=port, password=password, socket_timeout=2) as client:
        return int(client.xlen(key))


async def test_rotation_through_sentinel_survives_a_master_failover(stack: Any, tmp_path: Path) -> None:
    cluster = SentinelCluster(tmp_path / "sentinel")
    fn: HeldFunction | None = None
    try:
        await asyncio.to_thread(cluster.start)
        await stack.start_rotation(COFFER_REDIS_URL=cluster.url())
        jobs_key = JobQueue(stack.rotation.redis, prefix=stack.settings.rotation_stream_prefix).jobs_key

        # 1: a rotation through the Sentinel-managed master
        await stack.client.create_secret(name="svc/sentinel", secret_string="v0")
        token = (
            await stack.client.call(
                "RotateSecret", secret_id="svc/sentinel", rotation_lambda_arn="random-value"
            )
        ).version_id
        attempt = await wait_attempt(stack, "svc/sentinel", token, {"Succeeded", "Failed"})
        assert attempt.status == "Succeeded", attempt.error
        assert await asyncio.to_thread(stream_length, cluster.master_port, cluster.password, jobs_key) >= 1

        # 2: the master is SIGKILLed while a rotation is inside setSecret
        fn = HeldFunction(stack, tmp_path)
        arn = await fn.start("held")
        await stack.client.create_secret(name="svc/sentinel-held", secret_string="key-0")
        fn.target.add("key-0")
        fn.hold("setSecret")
        held = (
            await stack.client.call("RotateSecret", secret_id="svc/sentinel-held", rotation_lambda_arn=arn)
        ).version_id
        await asyncio.wait_for(fn.reached.wait(), 20)
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill_master)
        await eventually(
            lambda: asyncio.to_thread(cluster.master_port_now),
            until=lambda port: port == cluster.replica_port,
            timeout=30,
            interval=0.1,
            message="the sentinels to promote the replica",
        )
        failover = time.monotonic() - killed
        fn.release()
        attempt = await wait_attempt(stack, "svc/sentinel-held", held, {"Succeeded", "Failed"}, within=40)
        assert attempt.status == "Succeeded", attempt.error
        assert fn.target.accepts(
            (await stack.client.get_secret_value(secret_id="svc/sentinel-held")).secret_string
        )

        # 3: new rotations go through the promoted replica, with the same service and the same URL
        after = (
            await stack.client.call(
                "RotateSecret", secret_id="svc/sentinel", rotation_lambda_arn="random-value"
            )
        ).version_id
        attempt = await wait_attempt(stack, "svc/sentinel", after, {"Succeeded", "Failed"}, within=40)
        assert attempt.status == "Succeeded", attempt.error
        assert (await stack.client.get_secret_value(secret_id="svc/sentinel")).version_id == after
        assert await asyncio.to_thread(stream_length, cluster.replica_port, cluster.password, jobs_key) >= 1
        print(f"\nsentinel failover: replica promoted {failover:.2f}s after the master was killed")
    finally:
        if fn is not None:
            await fn.stop()
        await asyncio.to_thread(cluster.stop)
