"""Database rotation end to end: RotateSecret through the public API, the rotation service (scheduler, Redis
stream, workers) running the built-in database rotators against the password-authenticated PostgreSQL and
MariaDB servers, watched through ListRotationAttempts / DescribeSecret / GetSecretValue."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pymysql
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.testing.wait import eventually
from tests.integration.rotation_db.conftest import grant_master

if TYPE_CHECKING:
    from tests.integration.rotation_db.conftest import Coffer, MariaTarget, PgTarget

pytestmark = pytest.mark.integration


def name() -> str:
    return f"e{uuid.uuid4().hex[:10]}"


async def wait_attempt(
    coffer: Coffer, secret_id: str, token: str, within: float = 30.0
) -> sm.RotationAttempt:

    async def this_attempt() -> sm.RotationAttempt | None:
        reply = await coffer.admin.call("ListRotationAttempts", secret_id=secret_id)
        assert isinstance(reply, sm.ListRotationAttemptsResponse)
        return next((a for a in reply.attempts if a.version_id == token), None)

    attempt = await eventually(
        this_attempt,
        until=lambda a: a is not None and a.status in ("Succeeded", "Failed"),
        timeout=within,
        interval=0.1,
        message=f"attempt {token} to finish",
    )
    assert attempt is not None
    return attempt


async def rotate(coffer: Coffer, secret_id: str, rotator: str | None = None) -> str:
    fields: dict[str, Any] = {"secret_id": secret_id}
    if rotator is not None:
        fields["rotation_lambda_arn"] = rotator
    reply = await coffer.admin.call("RotateSecret", **fields)
    assert isinstance(reply, sm.RotateSecretResponse)
    return reply.version_id


async def current_doc(
    coffer: Coffer, secret_id: str, stage: str = "AWSCURRENT"
) -> tuple[str, dict[str, Any]]:
    reply = await coffer.admin.get_secret_value(secret_id=secret_id, version_stage=stage)
    return reply.version_id, json.loads(reply.secret_string)


async def pg_login(pg: PgTarget, user: str, password: str) -> bool:
    try:
        conn = await pg.connect(user, password)
    except asyncpg.InvalidPasswordError:
        return False
    await conn.close()
    return True


async def maria_login(target: MariaTarget, user: str, password: str) -> bool:
    try:
        conn: Any = await target.connect(user, password)
    except pymysql.err.OperationalError as exc:
        assert exc.args[0] == 1045, exc
        return False
    conn.close()
    return True


async def test_postgres_single_user_through_rotate_secret(
    pg_target: PgTarget, rotating_coffer: Coffer
) -> None:
    coffer = rotating_coffer
    user, old = name(), "e2e-initial-pw-1"
    admin = await pg_target.connect()
    try:
        await admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{old}'")
    finally:
        await admin.close()
    doc = {
        "engine": "postgres",
        "host": pg_target.tcp_host,
        "port": pg_target.port,
        "ssl": False,
        "username": user,
    }
    created = await coffer.admin.create_secret(
        name=f"db/{user}", secret_string=json.dumps({**doc, "password": old})
    )
    token = await rotate(coffer, created.arn, "postgresql-single-user")
    attempt = await wait_attempt(coffer, created.arn, token)
    assert attempt.status == "Succeeded", attempt.error
    version, current = await current_doc(coffer, created.arn)
    assert version == token and current["username"] == user
    assert await pg_login(pg_target, user, current["password"])
    assert not await pg_login(pg_target, user, old)
    previous_version, previous = await current_doc(coffer, created.arn, "AWSPREVIOUS")
    assert previous_version == created.version_id and previous["password"] == old
    describe = await coffer.admin.describe_secret(secret_id=created.arn)
    assert describe.HasField("last_rotated_date") and describe.rotation_enabled
    assert all("AWSPENDING" not in s.stages for s in describe.version_ids_to_stages.values())


async def test_postgres_target_refusing_fails_then_recovers(
    pg_target: PgTarget, rotating_coffer: Coffer
) -> None:
    coffer = rotating_coffer
    user, old = name(), "e2e-initial-pw-2"
    admin = await pg_target.connect()
    try:
        await admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{old}'")
        await admin.execute(f"ALTER ROLE {user} SET default_transaction_read_only = on")
    finally:
        await admin.close()
    doc = {
        "engine": "postgres",
        "host": pg_target.tcp_host,
        "port": pg_target.port,
        "ssl": False,
        "username": user,
    }
    created = await coffer.admin.create_secret(
        name=f"db/{user}", secret_string=json.dumps({**doc, "password": old})
    )
    token = await rotate(coffer, created.arn, "postgresql-single-user")
    attempt = await wait_attempt(coffer, created.arn, token)
    assert attempt.status == "Failed" and attempt.tries >= 2  # retried (COFFER_ROTATION_MAX_TRIES=2)
    assert attempt.error and "read-only" in attempt.error and old not in attempt.error
    version, current = await current_doc(coffer, created.arn)
    assert version == created.version_id and current["password"] == old  # AWSCURRENT untouched
    assert await pg_login(pg_target, user, old)
    pending = await coffer.admin.get_secret_value(secret_id=created.arn, version_id=token)
    assert json.loads(pending.secret_string)["password"] not in attempt.error
    # fix the target, clear the failed rotation's AWSPENDING (as AWS asks), rotate again
    admin = await pg_target.connect()
    try:
        await admin.execute(f"ALTER ROLE {user} RESET default_transaction_read_only")
    finally:
        await admin.close()
    await coffer.admin.update_secret_version_stage(
        secret_id=created.arn, version_stage="AWSPENDING", remove_from_version_id=token
    )
    again = await rotate(coffer, created.arn)
    attempt = await wait_attempt(coffer, created.arn, again)
    assert attempt.status == "Succeeded", attempt.error
    _, current = await current_doc(coffer, created.arn)
    assert await pg_login(pg_target, user, current["password"])
    assert not await pg_login(pg_target, user, old)


async def test_mariadb_alternating_users_through_rotate_secret(
    maria_target: MariaTarget, rotating_coffer: Coffer
) -> None:
    coffer = rotating_coffer
    user, old = name(), "e2e-initial-pw-3"
    conn: Any = await maria_target.connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, old))
    finally:
        conn.close()
    base = {
        "engine": "mariadb",
        "host": maria_target.host,
        "port": maria_target.port,
        **({"ssl_ca": maria_target.ca_pem} if maria_target.ca_pem else {"ssl": False}),
    }
    master = await coffer.admin.create_secret(
        name=f"db/master-{user}",
        secret_string=json.dumps(
            {**base, "username": maria_target.superuser, "password": maria_target.password}
        ),
    )
    await grant_master(coffer, master.arn)  # the operator lets the rotation role read the master
    created = await coffer.admin.create_secret(
        name=f"db/{user}",
        secret_string=json.dumps({**base, "username": user, "password": old, "masterarn": master.arn}),
    )
    first = await rotate(coffer, created.arn, "mysql-alternating-users")
    attempt = await wait_attempt(coffer, created.arn, first)
    assert attempt.status == "Succeeded", attempt.error
    _, clone = await current_doc(coffer, created.arn)
    assert clone["username"] == f"{user}_clone"
    assert await maria_login(maria_target, clone["username"], clone["password"])
    assert await maria_login(maria_target, user, old)  # AWSPREVIOUS keeps working

    second = await rotate(coffer, created.arn)
    attempt = await wait_attempt(coffer, created.arn, second)
    assert attempt.status == "Succeeded", attempt.error
    _, original = await current_doc(coffer, created.arn)
    assert original["username"] == user
    assert await maria_login(maria_target, user, original["password"])
    assert not await maria_login(maria_target, user, old)
    assert await maria_login(maria_target, clone["username"], clone["password"])
