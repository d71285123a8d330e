"""The issue's show: a cached client (TTL an hour) reads a secret, the secret rotates (the rotation service's
random-value rotator, through Redis and the public API), and the client serves the rotated value within a
second of the rotation finishing, because the change stream dropped its entry."""

from __future__ import annotations

from typing import Any

import pytest

from coffer.client.cache import SecretCache, SecretCacheConfig
from coffer.testing.wait import eventually
from tests.integration.rotation.test_rotation_end_to_end import wait_attempt

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_cached_client_sees_rotation_within_a_second(stack: Any) -> None:
    await stack.start_rotation()
    await stack.client.create_secret(name="app/rotated", secret_string="first-value")
    cache = SecretCache(SecretCacheConfig(secret_refresh_interval=3600), stack.client)
    try:
        await cache.start()
        await eventually(cache.stream_connected.is_set, timeout=30, message="the change stream is live")
        assert await cache.get_secret_string("app/rotated") == "first-value"
        kinds: list[str] = []
        cache.event_listeners.append(lambda event: kinds.append(event.kind))

        reply = await stack.client.call(
            "RotateSecret", secret_id="app/rotated", rotation_lambda_arn="random-value"
        )
        attempt = await wait_attempt(stack, "app/rotated", reply.version_id, {"Succeeded", "Failed"})
        assert attempt.status == "Succeeded"
        rotated = (await stack.client.get_secret_value(secret_id="app/rotated")).secret_string
        assert rotated != "first-value"

        await eventually(
            lambda: cache.get_secret_string("app/rotated"),
            until=lambda value: value == rotated,
            timeout=1.0,
            interval=0.02,
            message="the rotated value served by the cache",
        )
        assert "RotationSucceeded" in kinds or "StagesChanged" in kinds
        assert await cache.get_secret_string("app/rotated", "AWSPREVIOUS") == "first-value"
    finally:
        await cache.close()
