"""The PostgreSQL and MariaDB rotators against real password-authenticated servers, through the real public
API (kms → store → gateway, the rotation service's SecretsApi adapter). Each step runs twice (idempotency);
the store's CompleteRotation (removing AWSPENDING) is mirrored by hand, since these tests call the steps
directly.

The rotation service's role (``coffer-rotation``) may touch only secrets with rotation configured, so each
secret a test rotates gets it configured first (``configure_rotation``), and each master secret is granted to
the role (``grant_master``), as an operator would."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pymysql
import pytest

from coffer.rotation.rotators.base import RotationStepError, Rotator, StepContext
from coffer.rotation.rotators.database import AlternatingUsersRotator, SingleUserRotator
from coffer.rotation.rotators.mysql import (
    ROTATORS as MYSQL_ROTATORS,
)
from coffer.rotation.rotators.mysql import (
    MySqlAlternatingUsersRotator,
    MySqlSingleUserRotator,
    grant_prefix,
)
from coffer.rotation.rotators.postgres import (
    ROTATORS as PG_ROTATORS,
)
from coffer.rotation.rotators.postgres import (
    PostgresAlternatingUsersRotator,
    PostgresSingleUserRotator,
)
from tests.integration.rotation_db.conftest import LOOPBACK, configure_rotation, grant_master

if TYPE_CHECKING:
    from tests.integration.rotation_db.conftest import Coffer, MariaTarget, PgTarget

pytestmark = pytest.mark.integration


def name() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


async def rotate(rotator: Rotator, coffer: Coffer, arn: str, *, twice: bool = True) -> str:
    token = str(uuid.uuid4())
    ctx = StepContext(secret_arn=arn, token=token, api=coffer.api)
    for step in (rotator.create_secret, rotator.set_secret, rotator.test_secret, rotator.finish_secret):
        await step(ctx)
        if twice:
            await step(ctx)
    await coffer.admin.update_secret_version_stage(
        secret_id=arn, version_stage="AWSPENDING", remove_from_version_id=token
    )
    return token


async def value(coffer: Coffer, arn: str, stage: str = "AWSCURRENT") -> tuple[str, dict[str, Any]]:
    reply = await coffer.admin.get_secret_value(secret_id=arn, version_stage=stage)
    return reply.version_id, json.loads(reply.secret_string)


async def new_secret(coffer: Coffer, doc: dict[str, Any], rotator: str) -> str:
    """A secret holding ``doc`` with ``rotator`` configured as its rotation (not started)."""
    reply = await coffer.admin.create_secret(name=f"db/{name()}", secret_string=json.dumps(doc))
    await configure_rotation(coffer, reply.arn, rotator)
    return reply.arn


async def new_master(coffer: Coffer, doc: dict[str, Any]) -> str:
    """An alternating-users master secret (not rotated itself) that the rotation role is granted to read."""
    reply = await coffer.admin.create_secret(name=f"db/master-{name()}", secret_string=json.dumps(doc))
    await grant_master(coffer, reply.arn)
    return reply.arn


# --- PostgreSQL --------------------------------------------------------------------------------


async def pg_login(pg: PgTarget, user: str, password: str) -> bool:
    try:
        conn = await pg.connect(user, password)
    except asyncpg.InvalidPasswordError:
        return False
    try:
        assert await conn.fetchval("SELECT current_user") == user
    finally:
        await conn.close()
    return True


async def pg_user(pg: PgTarget, user: str, password: str) -> None:
    admin = await pg.connect()
    try:
        await admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    finally:
        await admin.close()


def pg_doc(pg: PgTarget, user: str, password: str, **extra: str) -> dict[str, Any]:
    return {
        "engine": "postgres",
        "host": pg.tcp_host,
        "port": pg.port,
        "ssl": False,
        "username": user,
        "password": password,
        "dbname": "postgres",
        **extra,
    }


async def test_harness_postgres_refuses_a_wrong_password(pg_target: PgTarget) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await pg_target.connect(password="not-the-password")
    assert await pg_login(pg_target, "postgres", pg_target.password)


async def test_postgres_single_user_rotation(pg_target: PgTarget, coffer: Coffer) -> None:
    user, old = name(), "initial-pw-1"
    await pg_user(pg_target, user, old)
    arn = await new_secret(coffer, pg_doc(pg_target, user, old, extra_key="kept"), "postgresql-single-user")
    session = await pg_target.connect(user, old)  # an open session survives the change
    try:
        token = await rotate(PostgresSingleUserRotator(targets=LOOPBACK), coffer, arn)
        version, current = await value(coffer, arn)
        assert version == token
        assert current["username"] == user and current["extra_key"] == "kept"
        assert current["password"] != old and len(current["password"]) == 32
        assert not set(current["password"]) & set("/@\"'\\")
        assert await pg_login(pg_target, user, current["password"])
        assert not await pg_login(pg_target, user, old)
        admin = await pg_target.connect()
        try:  # the server got a SCRAM verifier computed by the rotator, not the plaintext
            stored = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", user)
        finally:
            await admin.close()
        assert stored.startswith("SCRAM-SHA-256$4096:") and current["password"] not in stored
        _, previous = await value(coffer, arn, "AWSPREVIOUS")
        assert previous["password"] == old
        assert await session.fetchval("SELECT 1") == 1
    finally:
        await session.close()
    # a second rotation: set_secret logs in with AWSCURRENT (the first rotation's password)
    await rotate(PostgresSingleUserRotator(targets=LOOPBACK), coffer, arn, twice=False)
    _, newest = await value(coffer, arn)
    assert await pg_login(pg_target, user, newest["password"])
    assert not await pg_login(pg_target, user, current["password"])


async def test_postgres_single_user_falls_back_to_previous(pg_target: PgTarget, coffer: Coffer) -> None:
    """AWSCURRENT was changed by hand to a password the database never got: setSecret logs in with
    AWSPREVIOUS."""
    user, old = name(), "initial-pw-2"
    await pg_user(pg_target, user, old)
    arn = await new_secret(coffer, pg_doc(pg_target, user, old), "postgresql-single-user")
    await coffer.admin.put_secret_value(
        secret_id=arn, secret_string=json.dumps(pg_doc(pg_target, user, "never-set-in-db"))
    )
    await rotate(PostgresSingleUserRotator(targets=LOOPBACK), coffer, arn)
    _, current = await value(coffer, arn)
    assert await pg_login(pg_target, user, current["password"])
    assert not await pg_login(pg_target, user, old)


async def test_postgres_alternating_users(pg_target: PgTarget, coffer: Coffer) -> None:
    user, old = name(), "initial-pw-3"
    table = f"t_{name()}"
    await pg_user(pg_target, user, old)
    admin = await pg_target.connect()
    try:
        await admin.execute(f"CREATE TABLE {table} (v int); INSERT INTO {table} VALUES (42)")
        await admin.execute(f"GRANT SELECT ON {table} TO {user}")
    finally:
        await admin.close()
    master = await new_master(coffer, pg_doc(pg_target, "postgres", pg_target.password))
    arn = await new_secret(
        coffer, pg_doc(pg_target, user, old, masterarn=master), "postgresql-alternating-users"
    )
    rotator = PostgresAlternatingUsersRotator(targets=LOOPBACK)

    await rotate(rotator, coffer, arn)
    _, first = await value(coffer, arn)
    assert first["username"] == f"{user}_clone" and first["masterarn"] == master
    assert await pg_login(pg_target, first["username"], first["password"])
    assert await pg_login(pg_target, user, old)  # AWSPREVIOUS still logs in
    _, previous = await value(coffer, arn, "AWSPREVIOUS")
    assert (previous["username"], previous["password"]) == (user, old)
    clone = await pg_target.connect(first["username"], first["password"])
    try:
        assert await clone.fetchval(f"SELECT v FROM {table}") == 42  # the clone has the original's grants
    finally:
        await clone.close()

    await rotate(rotator, coffer, arn)
    _, second = await value(coffer, arn)
    assert second["username"] == user and second["password"] != old
    assert await pg_login(pg_target, user, second["password"])
    assert not await pg_login(pg_target, user, old)
    assert await pg_login(pg_target, first["username"], first["password"])  # AWSPREVIOUS (the clone) works


async def test_postgres_target_refusing_the_change(pg_target: PgTarget, coffer: Coffer) -> None:
    user, old = name(), "initial-pw-4"
    await pg_user(pg_target, user, old)
    admin = await pg_target.connect()
    try:  # the user's own sessions may no longer write: ALTER ROLE is refused
        await admin.execute(f"ALTER ROLE {user} SET default_transaction_read_only = on")
    finally:
        await admin.close()
    arn = await new_secret(coffer, pg_doc(pg_target, user, old), "postgresql-single-user")
    rotator = PostgresSingleUserRotator(targets=LOOPBACK)
    ctx = StepContext(secret_arn=arn, token=str(uuid.uuid4()), api=coffer.api)
    await rotator.create_secret(ctx)
    pending = json.loads(
        (await coffer.admin.get_secret_value(secret_id=arn, version_id=ctx.token)).secret_string
    )["password"]
    with pytest.raises(RotationStepError) as caught:
        await rotator.set_secret(ctx)
    message = str(caught.value)
    assert "read-only" in message and user in message
    assert pending not in message and old not in message
    with pytest.raises(RotationStepError):
        await rotator.test_secret(ctx)
    assert await pg_login(pg_target, user, old)  # AWSCURRENT untouched and still works
    _, current = await value(coffer, arn)
    assert current["password"] == old


async def test_postgres_master_without_createrole(pg_target: PgTarget, coffer: Coffer) -> None:
    user, weak = name(), name()
    await pg_user(pg_target, user, "initial-pw-5")
    await pg_user(pg_target, weak, "weak-master-pw")
    master = await new_master(coffer, pg_doc(pg_target, weak, "weak-master-pw"))
    arn = await new_secret(
        coffer, pg_doc(pg_target, user, "initial-pw-5", masterarn=master), "postgresql-alternating-users"
    )
    rotator = PostgresAlternatingUsersRotator(targets=LOOPBACK)
    ctx = StepContext(secret_arn=arn, token=str(uuid.uuid4()), api=coffer.api)
    await rotator.create_secret(ctx)
    with pytest.raises(RotationStepError) as caught:
        await rotator.set_secret(ctx)
    message = str(caught.value)
    assert "permission denied" in message
    assert "weak-master-pw" not in message and "initial-pw-5" not in message


async def test_postgres_rotator_refuses_bad_documents(coffer: Coffer) -> None:
    rotator = PostgresSingleUserRotator(targets=LOOPBACK)
    for doc, expected in (
        ({"engine": "mysql", "host": "h", "username": "u", "password": "secret-pw"}, "engine"),
        ({"engine": "postgres", "host": "h", "password": "secret-pw"}, "username"),
    ):
        arn = await new_secret(coffer, doc, "postgresql-single-user")
        with pytest.raises(RotationStepError) as caught:
            await rotator.create_secret(StepContext(secret_arn=arn, token=str(uuid.uuid4()), api=coffer.api))
        assert expected in str(caught.value) and "secret-pw" not in str(caught.value)
    arn = await new_secret(
        coffer,
        {"engine": "postgres", "host": "h", "username": "u", "password": "p"},
        "postgresql-alternating-users",
    )
    with pytest.raises(RotationStepError, match="masterarn"):
        await PostgresAlternatingUsersRotator(targets=LOOPBACK).create_secret(
            StepContext(secret_arn=arn, token=str(uuid.uuid4()), api=coffer.api)
        )


def test_registry_tables() -> None:
    assert set(PG_ROTATORS) == {"postgresql-single-user", "postgresql-alternating-users"}
    assert set(MYSQL_ROTATORS) == {"mysql-single-user", "mysql-alternating-users"}
    for table in (PG_ROTATORS, MYSQL_ROTATORS):
        for key, cls in table.items():
            rotator = cls()
            assert rotator.name == key
            assert isinstance(rotator, SingleUserRotator | AlternatingUsersRotator)


# --- MariaDB --------------------------------------------------------------------------------


async def maria_login(target: MariaTarget, user: str, password: str) -> bool:
    try:
        conn: Any = await target.connect(user, password)
    except pymysql.err.OperationalError as exc:
        assert exc.args[0] == 1045, exc
        return False
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT CURRENT_USER()")
            (who,) = await cur.fetchone()
            assert who.split("@")[0] == user
    finally:
        conn.close()
    return True


async def maria_exec(target: MariaTarget, *statements: tuple[str, tuple[Any, ...]]) -> None:
    conn: Any = await target.connect()
    try:
        async with conn.cursor() as cur:
            for sql, args in statements:
                await cur.execute(sql, args or None)
    finally:
        conn.close()


def maria_tls(target: MariaTarget) -> dict[str, Any]:
    """Verified TLS with the target's CA, or plaintext for the machine's fallback server (no TLS)."""
    return {"ssl_ca": target.ca_pem} if target.ca_pem else {"ssl": False}


def maria_doc(target: MariaTarget, user: str, password: str, **extra: str) -> dict[str, Any]:
    return {
        "engine": "mariadb",
        "host": target.host,
        "port": target.port,
        "username": user,
        "password": password,
        **maria_tls(target),
        **extra,
    }


async def test_harness_mariadb_refuses_a_wrong_password(maria_target: MariaTarget) -> None:
    user = name()
    await maria_exec(maria_target, ("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, "right-pw")))
    assert await maria_login(maria_target, user, "right-pw")
    assert not await maria_login(maria_target, user, "wrong-pw")


async def test_mariadb_single_user_rotation(maria_target: MariaTarget, coffer: Coffer) -> None:
    user, old = name(), "initial-pw-6"
    await maria_exec(maria_target, ("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, old)))
    arn = await new_secret(coffer, maria_doc(maria_target, user, old), "mysql-single-user")
    session: Any = await maria_target.connect(user, old)
    try:
        token = await rotate(MySqlSingleUserRotator(targets=LOOPBACK), coffer, arn)
        version, current = await value(coffer, arn)
        assert version == token and current["username"] == user and current["password"] != old
        assert await maria_login(maria_target, user, current["password"])
        assert not await maria_login(maria_target, user, old)
        _, previous = await value(coffer, arn, "AWSPREVIOUS")
        assert previous["password"] == old
        async with session.cursor() as cur:  # the open session survives
            await cur.execute("SELECT 1")
            assert (await cur.fetchone())[0] == 1
    finally:
        session.close()


async def test_mariadb_alternating_users(maria_target: MariaTarget, coffer: Coffer) -> None:
    user, old = name(), "initial-pw-7"
    db = f"d_{name()}"
    await maria_exec(
        maria_target,
        ("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, old)),
        (f"CREATE DATABASE {db}", ()),
        (f"CREATE TABLE {db}.t (v INT)", ()),
        (f"INSERT INTO {db}.t VALUES (42)", ()),
        (f"GRANT SELECT ON {db}.* TO %s@'%%'", (user,)),
    )
    master = await new_master(coffer, maria_doc(maria_target, maria_target.superuser, maria_target.password))
    arn = await new_secret(
        coffer, maria_doc(maria_target, user, old, masterarn=master, dbname=db), "mysql-alternating-users"
    )
    rotator = MySqlAlternatingUsersRotator(targets=LOOPBACK)

    await rotate(rotator, coffer, arn)
    _, first = await value(coffer, arn)
    assert first["username"] == f"{user}_clone"
    assert await maria_login(maria_target, first["username"], first["password"])
    assert await maria_login(maria_target, user, old)  # AWSPREVIOUS still logs in
    clone: Any = await maria_target.connect(first["username"], first["password"])
    try:
        async with clone.cursor() as cur:  # the clone got the original's grants
            await cur.execute(f"SELECT v FROM {db}.t")
            assert (await cur.fetchone())[0] == 42
    finally:
        clone.close()

    await rotate(rotator, coffer, arn)
    _, second = await value(coffer, arn)
    assert second["username"] == user
    assert await maria_login(maria_target, user, second["password"])
    assert not await maria_login(maria_target, user, old)
    assert await maria_login(maria_target, first["username"], first["password"])


async def test_mariadb_master_without_privileges(maria_target: MariaTarget, coffer: Coffer) -> None:
    user, weak = name(), name()
    await maria_exec(
        maria_target,
        ("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, "initial-pw-8")),
        ("CREATE USER %s@'%%' IDENTIFIED BY %s", (weak, "weak-master-pw")),
    )
    master = await new_master(coffer, maria_doc(maria_target, weak, "weak-master-pw"))
    arn = await new_secret(
        coffer, maria_doc(maria_target, user, "initial-pw-8", masterarn=master), "mysql-alternating-users"
    )
    rotator = MySqlAlternatingUsersRotator(targets=LOOPBACK)
    ctx = StepContext(secret_arn=arn, token=str(uuid.uuid4()), api=coffer.api)
    await rotator.create_secret(ctx)
    pending = json.loads(
        (await coffer.admin.get_secret_value(secret_id=arn, version_id=ctx.token)).secret_string
    )["password"]
    with pytest.raises(RotationStepError) as caught:
        await rotator.set_secret(ctx)
    message = str(caught.value)
    assert "refused" in message and weak in message
    for password in ("weak-master-pw", "initial-pw-8", pending):
        assert password not in message
    assert await maria_login(maria_target, user, "initial-pw-8")


async def test_mariadb_single_user_wrong_everywhere(maria_target: MariaTarget, coffer: Coffer) -> None:
    """No stored credentials log in: setSecret says so, without any password in the message."""
    user = name()
    await maria_exec(maria_target, ("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, "real-pw-9")))
    arn = await new_secret(coffer, maria_doc(maria_target, user, "stale-pw-9"), "mysql-single-user")
    rotator = MySqlSingleUserRotator(targets=LOOPBACK)
    ctx = StepContext(secret_arn=arn, token=str(uuid.uuid4()), api=coffer.api)
    await rotator.create_secret(ctx)
    with pytest.raises(RotationStepError, match="refused the pending, current and previous") as caught:
        await rotator.set_secret(ctx)
    assert "stale-pw-9" not in str(caught.value)
    assert await maria_login(maria_target, user, "real-pw-9")


def test_grant_prefix() -> None:
    assert (
        grant_prefix("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*ABC'") == "GRANT USAGE ON *.*"
    )
    assert (
        grant_prefix("GRANT SELECT ON `d TO x`.* TO `app`@`%` WITH GRANT OPTION")
        == "GRANT SELECT ON `d TO x`.*"
    )
    assert grant_prefix("GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION") is None
    assert grant_prefix("REVOKE nothing") is None


async def test_the_rotation_service_registry_finds_the_database_rotators() -> None:
    from coffer.rotation.rotators import RotatorRegistry

    class NoFunctions:
        async def rotation_functions(self) -> list[Any]:
            return []

    registry = RotatorRegistry(functions=NoFunctions(), default_ca_pem=b"")
    for rotator_name, cls in (
        ("postgresql-single-user", PostgresSingleUserRotator),
        ("postgresql-alternating-users", PostgresAlternatingUsersRotator),
        ("mysql-single-user", MySqlSingleUserRotator),
        ("mysql-alternating-users", MySqlAlternatingUsersRotator),
    ):
        rotator = await registry.resolve(rotator_name)
        assert isinstance(rotator, cls) and rotator.name == rotator_name


async def test_mariadb_target_refusing_the_change(maria_target: MariaTarget, coffer: Coffer) -> None:
    """A read-only server refuses the user's own SET PASSWORD: setSecret fails without any password in the
    message, and AWSCURRENT still logs in."""
    user, old = name(), "initial-pw-10"
    await maria_exec(maria_target, ("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, old)))
    arn = await new_secret(coffer, maria_doc(maria_target, user, old), "mysql-single-user")
    rotator = MySqlSingleUserRotator(targets=LOOPBACK)
    ctx = StepContext(secret_arn=arn, token=str(uuid.uuid4()), api=coffer.api)
    await rotator.create_secret(ctx)
    pending = json.loads(
        (await coffer.admin.get_secret_value(secret_id=arn, version_id=ctx.token)).secret_string
    )["password"]
    await maria_exec(maria_target, ("SET GLOBAL read_only = 1", ()))
    try:
        with pytest.raises(RotationStepError) as caught:
            await rotator.set_secret(ctx)
    finally:
        await maria_exec(maria_target, ("SET GLOBAL read_only = 0", ()))
    message = str(caught.value)
    assert "read-only" in message or "read_only" in message, message
    assert user in message and pending not in message and old not in message
    assert await maria_login(maria_target, user, old)
    with pytest.raises(RotationStepError):
        await rotator.test_secret(ctx)


async def test_stale_and_finished_tokens(pg_target: PgTarget, coffer: Coffer) -> None:
    """A token that is AWSCURRENT already makes every step a no-op; one labelled neither AWSPENDING nor
    AWSCURRENT (here: AWSPREVIOUS) is refused before the database is touched."""
    user, old = name(), "initial-pw-11"
    await pg_user(pg_target, user, old)
    arn = await new_secret(coffer, pg_doc(pg_target, user, old), "postgresql-single-user")
    first_version = (await coffer.admin.get_secret_value(secret_id=arn)).version_id
    rotator = PostgresSingleUserRotator(targets=LOOPBACK)
    token = await rotate(rotator, coffer, arn, twice=False)
    _, current = await value(coffer, arn)
    done = StepContext(secret_arn=arn, token=token, api=coffer.api)
    for step in (rotator.create_secret, rotator.set_secret, rotator.test_secret, rotator.finish_secret):
        await step(done)
    assert (await value(coffer, arn))[1] == current
    stale = StepContext(secret_arn=arn, token=first_version, api=coffer.api)
    for step in (rotator.create_secret, rotator.set_secret, rotator.test_secret):
        with pytest.raises(RotationStepError, match="not set as AWSPENDING"):
            await step(stale)
    assert await pg_login(pg_target, user, current["password"])
