"""Attacks on rotation targets, performed against the real services (kms → store → gateway → rotation on
Redis, in-process) and real databases, and now refused:

- a secret pointing at Coffer's own PostgreSQL (its Unix socket, which trusts local connections) or at
  Coffer's own Redis: the rotation fails with the generic reason and no role appears in Coffer's cluster;
- a caller who is not an operator cannot tell open, closed, missing and refused targets apart (the operator
  reads the detail);
- database TLS: verified by default (a server without TLS, or whose certificate is not trusted, is not
  used), cleartext password authentication refused;
- no password, ASCII or not, reaches PostgreSQL's statement log (always a SCRAM verifier);
- alternating users never take over a ``<user>_clone`` role Coffer did not make.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core.targets import DETAIL_MARK, TargetRefused
from coffer.embedded import free_port
from coffer.rotation.rotators.base import RotationStepError, StepContext, TargetUnreachable
from coffer.rotation.rotators.database import DbCredentials
from coffer.rotation.rotators.mysql import MySqlDriver, MySqlSingleUserRotator
from coffer.rotation.rotators.postgres import (
    CLONE_MARK,
    PostgresAlternatingUsersRotator,
    PostgresDriver,
    PostgresSingleUserRotator,
)
from coffer.settings import Settings
from coffer.targets import TargetGuard
from coffer.testing.scram_postgres import CLEARTEXT_ROLE, server_tls
from coffer.testing.wait import eventually
from tests.integration.rotation_db.conftest import LOOPBACK, configure_rotation, grant_master

if TYPE_CHECKING:
    from tests.integration.rotation_db.conftest import Coffer, MariaTarget, PgTarget

pytestmark = pytest.mark.integration

GENERIC_SET_SECRET = "The rotation step setSecret failed: could not connect to the target database."


def name() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


async def attempts_seen_by(client: Any, secret_id: str) -> list[sm.RotationAttempt]:
    reply = await client.call("ListRotationAttempts", secret_id=secret_id)
    assert isinstance(reply, sm.ListRotationAttemptsResponse)
    return list(reply.attempts)


async def failed_rotation(coffer: Coffer, doc: dict[str, Any], rotator: str) -> str:
    """Create a secret holding ``doc``, rotate it with ``rotator`` and wait for the attempt to fail."""
    created = await coffer.admin.create_secret(name=f"db/{name()}", secret_string=json.dumps(doc))
    reply = await coffer.admin.call("RotateSecret", secret_id=created.arn, rotation_lambda_arn=rotator)
    assert isinstance(reply, sm.RotateSecretResponse)

    async def status() -> str | None:
        found = [
            a for a in await attempts_seen_by(coffer.admin, created.arn) if a.version_id == reply.version_id
        ]
        return found[0].status if found else None

    final = await eventually(
        status, until=lambda s: s in ("Succeeded", "Failed"), timeout=30, interval=0.1, message="the attempt"
    )
    assert final == "Failed"
    return created.arn


def public_view(attempt: sm.RotationAttempt) -> tuple[str, list[tuple[str, str, str]]]:
    return attempt.error, [(s.step, s.status, s.error) for s in attempt.steps if s.error]


@asynccontextmanager
async def open_port() -> AsyncIterator[int]:
    """A TCP port where something listens (it answers garbage and hangs up): not a database."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


# --- item 1: the policy, through the rotation service -------------------------------------------------------


async def test_rotation_into_coffers_own_database_and_redis_is_refused(
    rotating_coffer: Coffer, database_url: str, redis_url: str
) -> None:
    """Coffer's own PostgreSQL trusts local (socket) connections: a secret pointing there as ``postgres``
    (single user) or with a master secret there (alternating users) would log in as superuser and create
    ``postgres_clone``. Both fail with the generic words; the operator reads why; no role appears."""
    coffer = rotating_coffer
    assert coffer.user is not None
    socket_dir = parse_qs(urlsplit(database_url).query)["host"][0]
    own = {"engine": "postgres", "host": socket_dir, "port": 5432, "username": "postgres", "ssl": False}
    master = await coffer.admin.create_secret(
        name=f"db/master-{name()}", secret_string=json.dumps({**own, "password": "x"})
    )
    await grant_master(coffer, master.arn)
    single = await failed_rotation(coffer, {**own, "password": "x"}, "postgresql-single-user")
    alternating = await failed_rotation(
        coffer, {**own, "password": "x", "masterarn": master.arn}, "postgresql-alternating-users"
    )
    redis = urlsplit(redis_url)
    into_redis = await failed_rotation(
        coffer,
        {**own, "host": "127.0.0.1", "port": redis.port, "password": "x"},
        "postgresql-single-user",
    )
    for arn, why in ((single, "Unix socket"), (alternating, "Unix socket"), (into_redis, "own endpoints")):
        (seen,) = await attempts_seen_by(coffer.user, arn)
        assert seen.error == GENERIC_SET_SECRET, seen.error
        (operator_view,) = await attempts_seen_by(coffer.admin, arn)
        assert operator_view.error.startswith(GENERIC_SET_SECRET + DETAIL_MARK)
        assert why in operator_view.error and "refused by the rotation target policy" in operator_view.error
    admin = await asyncpg.connect(database_url)
    try:
        clones = await admin.fetch("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname LIKE '%\\_clone'")
    finally:
        await admin.close()
    assert clones == []


async def test_callers_cannot_tell_open_closed_missing_and_refused_targets_apart(
    rotating_coffer: Coffer, database_url: str
) -> None:
    coffer = rotating_coffer
    assert coffer.user is not None
    base = {"engine": "postgres", "username": "app", "password": "x", "ssl": False}
    socket_dir = parse_qs(urlsplit(database_url).query)["host"][0]
    async with open_port() as listening:
        targets = {
            "open": {"host": "127.0.0.1", "port": listening},
            "closed": {"host": "127.0.0.1", "port": free_port()},
            "missing": {"host": "no-such-host.invalid", "port": 5432},
            "refused": {"host": "169.254.169.254", "port": 5432},
            "socket": {"host": socket_dir, "port": 5432},
        }
        arns = {
            kind: await failed_rotation(coffer, {**base, **where}, "postgresql-single-user")
            for kind, where in targets.items()
        }
    public = {
        kind: [public_view(a) for a in await attempts_seen_by(coffer.user, arn)] for kind, arn in arns.items()
    }
    first = public["open"]
    assert first and first[0][0] == GENERIC_SET_SECRET
    assert all(view == first for view in public.values()), public
    details = {
        kind: (await attempts_seen_by(coffer.admin, arn))[0].error.split(DETAIL_MARK, 1)[1]
        for kind, arn in arns.items()
    }
    assert len(set(details.values())) == len(details), details  # the operator can tell them apart


async def test_the_rotation_service_never_reaches_the_database_make_run_names(tmp_path: Path) -> None:
    """The rotation service is not given the database URL; ``make run`` names the database to it in
    COFFER_ROTATION_DENIED_TARGETS, and the store knows its own: both refuse it even where 127.0.0.1 is
    allowed, by address and by name."""
    env = {
        "COFFER_HOME": str(tmp_path),
        "COFFER_ROTATION_ALLOWED_TARGETS": "127.0.0.1,localhost",
    }
    rotation = TargetGuard.from_settings(
        Settings.from_env({**env, "COFFER_ROTATION_DENIED_TARGETS": "[127.0.0.1]:6543"})
    )
    store = TargetGuard.from_settings(
        Settings.from_env({**env, "COFFER_DATABASE_URL": "postgresql://store:pw@127.0.0.1:6543/coffer"})
    )
    for guard in (rotation, store):
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(TargetRefused, match="own endpoints"):
                await guard.address(host, 6543)
        assert await guard.address("127.0.0.1", 6544) == "127.0.0.1"
        with pytest.raises(TargetRefused, match="own endpoints"):
            await guard.address("127.0.0.1", 7444)  # the store's default port


# --- item 12: TLS -------------------------------------------------------------------------------------------


def pg_creds(pg: PgTarget, user: str, password: str, **extra: Any) -> DbCredentials:
    doc = {"engine": "postgres", "host": pg.tcp_host, "port": pg.port, "username": user, "password": password}
    return PostgresDriver(targets=LOOPBACK).parse(json.dumps({**doc, **extra}), what="test")


async def test_postgres_without_tls_is_not_used_unless_the_secret_opts_in(pg_target: PgTarget) -> None:
    driver = PostgresDriver(targets=LOOPBACK)
    with pytest.raises(TargetUnreachable) as refused:
        await driver.connect(pg_creds(pg_target, "postgres", pg_target.password))
    assert "refused TLS" in (refused.value.detail or ""), refused.value.detail
    conn = await driver.connect(pg_creds(pg_target, "postgres", pg_target.password, ssl=False))
    assert conn is not None
    await driver.close(conn)


async def test_postgres_cleartext_password_authentication_is_refused(pg_target: PgTarget) -> None:
    """pg_hba asks ``coffer_cleartext`` for its password in cleartext: the driver refuses to send it."""
    admin = await pg_target.connect()
    password = f"cleartext-canary-{uuid.uuid4().hex}"
    try:
        await admin.execute(f"DROP ROLE IF EXISTS {CLEARTEXT_ROLE}")
        await admin.execute(f"CREATE ROLE {CLEARTEXT_ROLE} LOGIN PASSWORD '{password}'")
    finally:
        await admin.close()
    driver = PostgresDriver(targets=LOOPBACK)
    with pytest.raises(RotationStepError, match="cleartext"):
        await driver.connect(pg_creds(pg_target, CLEARTEXT_ROLE, password, ssl=False))
    # the server never saw the password: asyncpg itself would have answered the request
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=pg_target.port,
        user=CLEARTEXT_ROLE,
        password=password,
        database="postgres",
        ssl=False,
    )
    await conn.close()


def maria_creds(target: MariaTarget, **extra: Any) -> DbCredentials:
    doc = {
        "engine": "mariadb",
        "host": target.host,
        "port": target.port,
        "username": target.superuser,
        "password": target.password,
    }
    return MySqlDriver(targets=LOOPBACK).parse(json.dumps({**doc, **extra}), what="test")


async def test_mariadb_tls_is_verified(maria_target: MariaTarget, tmp_path: Path) -> None:
    if not maria_target.ca_pem:
        pytest.skip("the machine's fallback MariaDB has no TLS")
    driver = MySqlDriver(targets=LOOPBACK)
    conn = await driver.connect(maria_creds(maria_target, ssl_ca=maria_target.ca_pem))
    assert conn is not None
    try:
        async with conn.cursor() as cur:
            await cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            (_, cipher) = await cur.fetchone()
        assert cipher, "the session is not encrypted"
    finally:
        await driver.close(conn)
    other_ca = server_tls(tmp_path)
    for unverified in ({}, {"ssl_ca": other_ca}):  # the system's CAs, another CA: not this server's
        with pytest.raises(TargetUnreachable) as refused:
            await driver.connect(maria_creds(maria_target, **unverified))
        assert "CERTIFICATE_VERIFY_FAILED" in (refused.value.detail or ""), refused.value.detail


# --- item 13: no password in the statement log --------------------------------------------------------------


async def test_no_password_reaches_the_statement_log(pg_target: PgTarget) -> None:
    assert pg_target.log_file is not None
    user = name()
    first = f"ascii-canary-{uuid.uuid4().hex}"
    admin = await pg_target.connect()
    try:
        sql = await admin.fetchval(
            "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)", user, first
        )
        await admin.execute(sql)
    finally:
        await admin.close()
    canaries = [
        f"Grüße-Ünïcødé-canary-{uuid.uuid4().hex}",
        "\uff46\uff55\uff4c\uff4c-width-canary-" + uuid.uuid4().hex,  # fullwidth "full": NFKC changes it
    ]
    driver = PostgresDriver(targets=LOOPBACK)
    previous = first
    for canary in canaries:
        conn = await driver.connect(pg_creds(pg_target, user, previous, ssl=False))
        assert conn is not None
        try:
            await driver.set_own_password(conn, username=user, password=canary)
        finally:
            await driver.close(conn)
        login = await pg_target.connect(user, canary)  # SASLprep agrees with the client's
        await login.close()
        previous = canary
    clone_canary = f"Ĉlöne-canary-{uuid.uuid4().hex}"
    conn = await driver.connect(pg_creds(pg_target, "postgres", pg_target.password, ssl=False))
    assert conn is not None
    try:
        await driver.upsert_user(conn, username=user + "_clone", password=clone_canary, grants_from=user)
    finally:
        await driver.close(conn)
    login = await pg_target.connect(user + "_clone", clone_canary)
    await login.close()

    log = await asyncio.to_thread(pg_target.log_file.read_text, errors="replace")
    assert "SCRAM-SHA-256$" in log and "ALTER ROLE" in log  # statements are logged
    for canary in [*canaries, clone_canary]:
        assert canary not in log
        assert canary.split("-canary-")[1] not in log


# --- item 15: only Coffer's own clones ----------------------------------------------------------------------


async def pg_exec(pg: PgTarget, *statements: str) -> None:
    admin = await pg.connect()
    try:
        for sql in statements:
            await admin.execute(sql)
    finally:
        await admin.close()


async def alternating_rotation(coffer: Coffer, pg: PgTarget, user: str, password: str) -> StepContext:
    master = await coffer.admin.create_secret(
        name=f"db/master-{name()}",
        secret_string=json.dumps(
            {"engine": "postgres", "host": pg.tcp_host, "port": pg.port, "ssl": False}
            | {"username": pg.superuser, "password": pg.password}
        ),
    )
    await grant_master(coffer, master.arn)
    doc = {"engine": "postgres", "host": pg.tcp_host, "port": pg.port, "ssl": False, "dbname": "postgres"}
    created = await coffer.admin.create_secret(
        name=f"db/{user}",
        secret_string=json.dumps({**doc, "username": user, "password": password, "masterarn": master.arn}),
    )
    await configure_rotation(coffer, created.arn, "postgresql-alternating-users")
    return StepContext(secret_arn=created.arn, token=str(uuid.uuid4()), api=coffer.api)


async def test_alternating_users_refuses_an_unrelated_clone_role(pg_target: PgTarget, coffer: Coffer) -> None:
    """``<user>_clone`` exists but Coffer did not make it (no mark, not a member of ``<user>``): setSecret
    refuses and leaves its password alone. A Coffer clone is marked and may be rotated again."""
    user, victim = name(), name()
    await pg_exec(
        pg_target,
        f"CREATE ROLE {user} LOGIN PASSWORD 'app-pw-1'",
        f"CREATE ROLE {user}_clone LOGIN PASSWORD 'unrelated-pw'",
    )
    rotator = PostgresAlternatingUsersRotator(targets=LOOPBACK)
    ctx = await alternating_rotation(coffer, pg_target, user, "app-pw-1")
    await rotator.create_secret(ctx)
    with pytest.raises(RotationStepError, match="not a clone Coffer made"):
        await rotator.set_secret(ctx)
    login = await pg_target.connect(f"{user}_clone", "unrelated-pw")
    await login.close()

    # The other direction: a secret for ``<x>_clone`` would make the master set ``<x>``'s password.
    await pg_exec(
        pg_target,
        f"CREATE ROLE {victim} LOGIN PASSWORD 'victim-pw'",
        f"CREATE ROLE {victim}_clone LOGIN PASSWORD 'attacker-pw'",
    )
    ctx = await alternating_rotation(coffer, pg_target, f"{victim}_clone", "attacker-pw")
    await rotator.create_secret(ctx)
    with pytest.raises(RotationStepError, match="not a clone Coffer made"):
        await rotator.set_secret(ctx)
    login = await pg_target.connect(victim, "victim-pw")
    await login.close()

    # A clone Coffer makes carries its mark.
    fresh = name()
    await pg_exec(pg_target, f"CREATE ROLE {fresh} LOGIN PASSWORD 'fresh-pw'")
    ctx = await alternating_rotation(coffer, pg_target, fresh, "fresh-pw")
    await rotator.create_secret(ctx)
    await rotator.set_secret(ctx)
    admin = await pg_target.connect()
    try:
        mark = await admin.fetchval(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles WHERE rolname = $1",
            f"{fresh}_clone",
        )
    finally:
        await admin.close()
    assert mark == CLONE_MARK + fresh


async def test_single_user_rotation_of_a_tls_mariadb(maria_target: MariaTarget, coffer: Coffer) -> None:
    """The full single-user rotation over verified TLS (the secret carries the server's CA)."""
    if not maria_target.ca_pem:
        pytest.skip("the machine's fallback MariaDB has no TLS")
    user = name()
    conn: Any = await maria_target.connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, "tls-pw-1"))
    finally:
        conn.close()
    doc = {
        "engine": "mariadb",
        "host": maria_target.host,
        "port": maria_target.port,
        "username": user,
        "password": "tls-pw-1",
        "ssl_ca": maria_target.ca_pem,
    }
    created = await coffer.admin.create_secret(name=f"db/{user}", secret_string=json.dumps(doc))
    await configure_rotation(coffer, created.arn, "mysql-single-user")
    rotator = MySqlSingleUserRotator(targets=LOOPBACK)
    ctx = StepContext(secret_arn=created.arn, token=str(uuid.uuid4()), api=coffer.api)
    for step in (rotator.create_secret, rotator.set_secret, rotator.test_secret, rotator.finish_secret):
        await step(ctx)
    current = json.loads((await coffer.admin.get_secret_value(secret_id=created.arn)).secret_string)
    assert current["password"] != "tls-pw-1"
    login: Any = await maria_target.connect(user, current["password"])
    login.close()


async def test_rotators_built_without_a_policy_refuse_loopback(pg_target: PgTarget) -> None:
    """A rotator built without a policy gets the one with nothing set: loopback is refused."""
    creds = pg_creds(pg_target, "postgres", pg_target.password, ssl=False)
    with pytest.raises(TargetUnreachable) as refused:
        await PostgresSingleUserRotator().driver.connect(creds)
    assert "loopback" in (refused.value.detail or "")
