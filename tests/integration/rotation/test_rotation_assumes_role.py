"""The rotation service holds only IAM user coffer-rotation's long-term key and works as role coffer-rotation
through sessions it assumes with STS (through the gateway): after a rotation the store holds a session
(``ASIA…``) of the role, short-lived as IAM requires; a session the gateway refuses as expired is replaced
and the rotation goes on."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.testing.wait import eventually

pytestmark = pytest.mark.integration

SESSIONS = """
SELECT k.access_key_id, k.session_name, k.created_at, k.expires_at
  FROM store.iam_access_keys k JOIN store.iam_principals p ON p.id = k.principal_id
 WHERE p.kind = 'role' AND p.name = 'coffer-rotation' AND k.access_key_id LIKE 'ASIA%'
 ORDER BY k.created_at"""


async def rotate(stack: Any, secret_id: str) -> sm.RotationAttempt:
    reply = await stack.client.call("RotateSecret", secret_id=secret_id, rotation_lambda_arn="random-value")
    token = reply.version_id

    async def this_attempt() -> sm.RotationAttempt | None:
        listed = await stack.client.call("ListRotationAttempts", secret_id=secret_id)
        assert isinstance(listed, sm.ListRotationAttemptsResponse)
        return next((a for a in listed.attempts if a.version_id == token), None)

    attempt = await eventually(
        this_attempt,
        until=lambda a: a is not None and a.status in ("Succeeded", "Failed"),
        timeout=20,
        interval=0.1,
        message=f"the rotation {token} to finish",
    )
    assert attempt is not None
    return attempt


async def test_the_rotation_service_assumes_its_role_for_short_sessions(stack: Any) -> None:
    # the rotation service's settings name the user's key, not a session
    assert stack.env["COFFER_ROTATION_ACCESS_KEY_ID"].startswith("AKIA")
    assert "COFFER_ROTATION_SESSION_TOKEN" not in stack.env
    await stack.start_rotation()
    await stack.client.create_secret(name="app/assumed", secret_string="v0")
    conn = await asyncpg.connect(stack.env["COFFER_DATABASE_URL"])
    try:
        assert await conn.fetch(SESSIONS) == []  # nothing issued before the service needs it
        attempt = await rotate(stack, "app/assumed")
        assert attempt.status == "Succeeded", attempt.error
        sessions = await conn.fetch(SESSIONS)
        assert len(sessions) == 1  # one session for the whole rotation (four steps, several calls)
        first = sessions[0]
        lifetime = first["expires_at"] - first["created_at"]
        assert dt.timedelta(minutes=15) <= lifetime <= dt.timedelta(hours=12)
        assert lifetime <= dt.timedelta(hours=1, minutes=1)  # COFFER_ROTATION_SESSION_SECONDS' default
        assert first["session_name"].startswith("coffer-rotation@")

        # The session ends early (as if it had expired): the gateway refuses it with ExpiredTokenException,
        # the service assumes the role again and the next rotation succeeds with the new session.
        async with conn.transaction():
            await conn.execute(
                "UPDATE store.iam_access_keys SET expires_at = now() - interval '1 second'"
                " WHERE access_key_id = $1",
                first["access_key_id"],
            )
            await conn.execute(
                "SELECT pg_notify('coffer_iam', $1)",
                json.dumps({"access_key_ids": [first["access_key_id"]], "principal_arns": []}),
            )

        # (the gateways drop the cached key within a second of the NOTIFY: rotate until the refusal is seen)
        async def rotate_once() -> list[asyncpg.Record]:
            attempt = await rotate(stack, "app/assumed")
            assert attempt.status == "Succeeded", attempt.error  # the refused call was retried, not failed
            return list(await conn.fetch(SESSIONS))

        sessions = await eventually(
            rotate_once,
            until=lambda found: len(found) == 2,
            timeout=30,
            interval=0.1,
            message="a second session after the first was refused as expired",
        )
        assert len(sessions) == 2 and sessions[1]["access_key_id"] != first["access_key_id"]
        assert sessions[1]["expires_at"] - sessions[1]["created_at"] <= dt.timedelta(hours=12)
    finally:
        await conn.close()
