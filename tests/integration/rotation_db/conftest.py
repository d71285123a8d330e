"""Database targets with password authentication for the database rotators, plus the Coffer stack the rotators
talk to.

- ``pg_target``: a second embedded PostgreSQL (the harness's own trusts everyone, so it would accept any
  password): the superuser gets a password while the server still trusts, then ``pg_hba.conf`` is rewritten to
  ``scram-sha-256`` for local and host lines and the server restarted on 127.0.0.1 too, logging every
  statement. Its build has no TLS: secrets for it opt into plaintext (``"ssl": false``).
- ``maria_target``: a private ``mariadbd`` (the Debian package on this machine) in a temp dir on a free port,
  root with a password, TLS on with a certificate from a CA made for it (``ca_pem``: secrets for it carry it
  as ``ssl_ca``); the one on 127.0.0.1:3306 only as a fallback (root without a password, no TLS); skipped
  with the reason only if neither can be had.
- ``LOOPBACK``: the rotation target policy the tests' rotators get (127.0.0.1 allowed, as the targets are
  there); the rotation service gets the same through COFFER_ROTATION_ALLOWED_TARGETS.
- ``coffer``: kms → store → gateway, real and in-process on a fresh database (``coffer.testing.stack``), and
  a ``GatewaySecretsApi`` (the rotation service's adapter) signing with sessions of role ``coffer-rotation``
  assumed through STS with a key of user ``coffer-rotation`` (``service/rotation``), as the service does;
  ``rotating_coffer`` adds the rotation service (scheduler, Redis stream, workers) with tiny poll, lease and
  back-off settings.
- ``configure_rotation`` / ``grant_master``: the rotation service runs as the assumed role
  ``coffer-rotation``, which may touch only secrets with rotation configured
  (``secretsmanager:resource/AllowRotationLambdaArn``). So a secret a test rotates gets its rotation
  configured first, as a user would (RotateSecret with ``RotateImmediately=false``), and the master secret
  an alternating-users rotator reads is granted to the role by the operator (an inline role policy), as
  AWS's alternating-users templates grant the rotation function's role the master secret.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.aio import AsyncCofferClient
from coffer.core import errors
from coffer.core.targets import TargetPolicy
from coffer.embedded import free_port
from coffer.rotation.api import GatewaySecretsApi
from coffer.settings import DEFAULT_ROTATION_ROLE_ARN
from coffer.targets import TargetGuard
from coffer.testing.scram_postgres import ScramPostgres, scram_postgres, server_tls
from coffer.testing.stack import provisioned_stack
from coffer.testing.stack import rotation_env as rotation_credentials_env
from coffer.testing.wait import eventually, eventually_sync

PgTarget = ScramPostgres
ALLOWED_TARGETS = "127.0.0.1"
LOOPBACK = TargetGuard(TargetPolicy.from_settings(ALLOWED_TARGETS))


@dataclass(frozen=True)
class MariaTarget:
    host: str
    port: int
    superuser: str
    password: str
    private: bool  # our own server (True) or the machine's fallback
    ca_pem: str = ""  # the CA of its TLS certificate ("": no TLS)

    async def connect(self, user: str | None = None, password: str | None = None) -> object:
        import aiomysql

        return await aiomysql.connect(
            host=self.host,
            port=self.port,
            user=user or self.superuser,
            password=self.password if password is None else password,
            autocommit=True,
        )


@pytest.fixture(scope="session")
def pg_target() -> Iterator[PgTarget]:
    with scram_postgres(log_statements=True) as server:
        yield server


def _maria_ping(*, port: int, user: str, password: str, unix_socket: str | None = None) -> bool:
    try:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=port,
            user=user,
            password=password,
            unix_socket=unix_socket,
            connect_timeout=2,
        )
    except pymysql.err.MySQLError:
        return False
    conn.close()
    return True


def _start_private_mariadb(root: Path) -> tuple[subprocess.Popen[bytes], MariaTarget] | str:
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    daemon = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
    if install is None or not os.access(daemon, os.X_OK):
        return "no mariadb-install-db / mariadbd on this machine"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    data = root / "data"
    sock = root / "mysqld.sock"
    done = subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *as_root,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return f"mariadb-install-db failed: {done.stderr.decode(errors='replace')[-500:]}"
    port = free_port()
    ca_pem = server_tls(root)
    proc = subprocess.Popen(
        [
            daemon,
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={sock}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            f"--pid-file={root / 'mariadbd.pid'}",
            f"--log-error={root / 'error.log'}",
            "--plugin-maturity=stable",
            f"--ssl-cert={root / 'server.crt'}",
            f"--ssl-key={root / 'server.key'}",
            *as_root,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def started() -> str:
        if _maria_ping(port=port, user="root", password="", unix_socket=str(sock)):
            return "up"
        return "exited" if proc.poll() is not None else ""

    try:
        state = eventually_sync(started, timeout=30, interval=0.1)
    except AssertionError:
        state = "late"
    if state != "up":
        proc.kill()
        proc.wait()
        log = (root / "error.log").read_text(errors="replace")[-800:] if (root / "error.log").exists() else ""
        return f"mariadbd did not start: {log}"
    password = secrets.token_urlsafe(18)
    conn = pymysql.connect(unix_socket=str(sock), user="root", password="")
    try:
        with conn.cursor() as cur:
            for host in ("localhost", "127.0.0.1"):
                cur.execute("ALTER USER 'root'@%s IDENTIFIED BY %s", (host, password))
    finally:
        conn.close()
    return proc, MariaTarget(
        host="127.0.0.1", port=port, superuser="root", password=password, private=True, ca_pem=ca_pem
    )


@pytest.fixture(scope="session")
def maria_target() -> Iterator[MariaTarget]:
    root = Path(tempfile.mkdtemp(prefix="coffer-test-maria-"))
    started = _start_private_mariadb(root)
    try:
        if isinstance(started, str):
            if _maria_ping(port=3306, user="root", password=""):
                yield MariaTarget(host="127.0.0.1", port=3306, superuser="root", password="", private=False)
                return
            pytest.skip(f"no MariaDB/MySQL server: {started}; and none usable on 127.0.0.1:3306")
        proc, target = started
        try:
            yield target
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Coffer:
    admin: AsyncCofferClient  # user/admin: an operator
    api: GatewaySecretsApi
    env: dict[str, str]
    user: AsyncCofferClient | None = None  # user/reader: not an operator


@pytest.fixture
async def coffer(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Coffer]:
    """kms → store → gateway, real and in-process; ``api`` is the rotation service's SecretsApi adapter."""
    async for stack in _coffer(tmp_path, pki_dir, database_url, redis_url=None):
        yield stack


@pytest.fixture
async def rotating_coffer(
    tmp_path: Path, pki_dir: Path, database_url: str, redis_url: str
) -> AsyncIterator[Coffer]:
    """``coffer`` plus the rotation service on the harness's Redis."""
    async for stack in _coffer(tmp_path, pki_dir, database_url, redis_url=redis_url):
        yield stack


async def _coffer(
    tmp_path: Path, pki_dir: Path, database_url: str, *, redis_url: str | None
) -> AsyncIterator[Coffer]:
    rotation_env = {}
    if redis_url is not None:
        rotation_env = {
            "COFFER_REDIS_URL": redis_url,
            "COFFER_ROTATION_POLL_SECONDS": "0.2",
            "COFFER_ROTATION_LEASE_SECONDS": "5",
            "COFFER_ROTATION_BACKOFF_BASE_SECONDS": "0.05",
            "COFFER_ROTATION_MAX_TRIES": "2",
            "COFFER_ROTATION_WORKERS": "2",
            "COFFER_ROTATION_STREAM_PREFIX": f"test:{secrets.token_hex(4)}",
            "COFFER_ROTATION_ALLOWED_TARGETS": ALLOWED_TARGETS,
        }
    services = await provisioned_stack(
        home=tmp_path, pki_dir=pki_dir, database_url=database_url, **rotation_env
    )
    try:
        await services.start_kms()
        await services.start_store()
        admin_credentials = await services.credential("user/admin")
        rotation_credentials = await services.credential("service/rotation")
        gateway = await services.start_gateway()
        endpoint = f"127.0.0.1:{gateway.port}"
        services.env.update(rotation_credentials_env(rotation_credentials))
        admin = AsyncCofferClient(endpoint, services.ca_file, admin_credentials)
        user = AsyncCofferClient(endpoint, services.ca_file, await services.credential("user/reader"))
        # as the rotation service: sessions of role coffer-rotation assumed with user coffer-rotation's key
        api = GatewaySecretsApi.assuming_role(
            endpoint, services.ca_file, rotation_credentials, role_arn=DEFAULT_ROTATION_ROLE_ARN
        )
        try:
            if redis_url is not None:
                await services.start_rotation()
            yield Coffer(admin=admin, api=api, env=services.env, user=user)
        finally:
            await services.stop_rotation()
            await api.aclose()
            await admin.close()
            await user.close()
    finally:
        await services.aclose()


ROTATION_ROLE = "coffer-rotation"


async def configure_rotation(coffer: Coffer, secret_arn: str, rotator: str) -> None:
    """Configure ``rotator`` as the secret's rotation, as a user would, without rotating it: RotateSecret
    with ``RotateImmediately=false``. Like AWS, that still starts a configuration test (testSecret on a copy
    of AWSCURRENT under AWSPENDING); with no rotation service running (``coffer``) nobody would ever run
    it, so it is cancelled, which drops the copy and turns the schedule off but keeps the configured
    rotator (``secretsmanager:resource/AllowRotationLambdaArn``, which the role's policy needs)."""
    reply = await coffer.admin.call(
        "RotateSecret",
        secret_id=secret_arn,
        rotation_lambda_arn=rotator,
        rotation_rules={"automatically_after_days": 30},
        rotate_immediately=False,
    )
    assert isinstance(reply, sm.RotateSecretResponse)
    await coffer.admin.call("CancelRotateSecret", secret_id=secret_arn)


def master_policy_name(master_arn: str) -> str:
    return f"RotationMasters-{master_arn.rsplit(':', 1)[-1].replace('/', '-')}"[:128]


async def grant_master(coffer: Coffer, master_arn: str) -> None:
    """The operator grants the rotation role read of an alternating-users master secret (an inline policy on
    role ``coffer-rotation``), and waits until the rotation service's credentials can read it (the store's
    and the gateway's principal caches follow the change by notification)."""
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": master_arn,
            }
        ],
    }
    await coffer.admin.iam.put_role_policy(
        role_name=ROTATION_ROLE,
        policy_name=master_policy_name(master_arn),
        policy_document=json.dumps(document),
    )
    await eventually(
        lambda: coffer.api.get_value(secret_id=master_arn),
        timeout=30,
        interval=0.05,
        retry_on=(errors.AccessDenied,),
        message=f"the rotation role to read {master_arn}",
    )
