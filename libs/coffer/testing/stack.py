"""The one way tests build Coffer's service stack: each service's database role provisioned in a fresh
database (``coffer.dbroles``), then kms, store, gateway and rotation started in-process on port 0 as needed,
each with only the settings its process would get (``coffer.settings.service_env``) and its own database URL.

``env`` holds the settings common to the stack (``COFFER_DATABASE_URL`` there is the administrator's URL,
for tests that look into the tables; no service is given it). Start services in dependency order (kms, store,
gateway, rotation): each start records the bound address in ``env`` for the next ones. ``aclose`` stops
everything that was started, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from coffer import dbroles
from coffer.client.credentials import Credentials
from coffer.clock import Clock
from coffer.core.principal import ROOT_ACCOUNT
from coffer.crypto.access_keys import (
    SESSION_PREFIX,
    derive_signing_key,
    new_access_key_id,
    new_secret_access_key,
    new_session_token,
    token_digest,
)
from coffer.crypto.rootkey import RootKey
from coffer.embedded import EmbeddedPostgres
from coffer.gateway.__main__ import GatewayRuntime
from coffer.gateway.__main__ import serve as serve_gateway
from coffer.kms.__main__ import KmsRuntime
from coffer.kms.__main__ import serve as serve_kms
from coffer.rootkey_file import ensure_root_key
from coffer.rotation.__main__ import RotationRuntime
from coffer.rotation.__main__ import serve as serve_rotation
from coffer.settings import Settings, service_env
from coffer.store.__main__ import StoreRuntime
from coffer.store.__main__ import serve as serve_store
from coffer.store.iam_bootstrap import (
    ADMIN_USER,
    ROTATION_NAME,
    BootstrapKey,
    bootstrap_entry,
    issue_user_key,
)


def base_env(home: Path, pki_dir: Path) -> dict[str, str]:
    """The settings every test stack starts from: files under ``home``, every service on port 0, no request
    rates (tests call far faster than AWS's write quotas; the throttling tests set ``COFFER_THROTTLE=on``)."""
    return {
        "COFFER_THROTTLE": "off",
        "COFFER_HOME": str(home),
        "COFFER_PKI_DIR": str(pki_dir),
        "COFFER_ROOT_KEY_FILE": str(home / "keys" / "root.key"),
        "COFFER_BOOTSTRAP_KEYS_FILE": str(home / "iam-bootstrap.json"),
        "COFFER_GATEWAY_ADDR": "127.0.0.1:0",
        "COFFER_STORE_ADDR": "127.0.0.1:0",
        "COFFER_KMS_ADDR": "127.0.0.1:0",
        "COFFER_ROTATION_ADDR": "127.0.0.1:0",
        # the gateway's AWS-protocol endpoint (HTTPS, SigV4), on a port of its own
        "COFFER_AWS_ADDR": "127.0.0.1:0",
    }


@dataclass
class ServiceStack:
    env: dict[str, str]
    #: Each data service's own database URL (its role), by service name.
    dsns: dict[str, str] = field(default_factory=dict)
    kms: KmsRuntime | None = None
    store: StoreRuntime | None = None
    gateway: GatewayRuntime | None = None
    rotation: RotationRuntime | None = None
    #: The root account admin's access key (inserted by the store at start, from the bootstrap keys file).
    admin: Credentials | None = None
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    @property
    def pki_dir(self) -> Path:
        return Path(self.env["COFFER_PKI_DIR"])

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    def settings(self, service: str, **overrides: str) -> Settings:
        """``service``'s settings: the stack's, with its own database URL, filtered as its process gets
        them."""
        values = {**self.env, **overrides}
        values.pop("COFFER_DATABASE_URL", None)
        if service in self.dsns:
            values["COFFER_DATABASE_URL"] = self.dsns[service]
        return Settings.from_env(service_env(service, values))

    def _started(self, service: str, port: int) -> str:
        addr = f"127.0.0.1:{port}"
        self.env[f"COFFER_{service.upper()}_ADDR"] = addr
        return addr

    async def start_kms(self, *, clock: Clock | None = None, root_key: RootKey | None = None) -> KmsRuntime:
        settings = self.settings("kms")
        if root_key is None and settings.seal == "file":
            ensure_root_key(settings.root_key_file)
        self.kms = await serve_kms(settings, clock=clock, root_key=root_key)
        if self.store is not None:
            await self.kms.use_store(self.env["COFFER_STORE_ADDR"], self.pki_dir)
        self._closers.append(self.kms.aclose)
        self._started("kms", self.kms.port)
        return self.kms

    async def stop_kms(self) -> None:
        """Stop the kms (as a process exit would: what it held in memory is gone); ``start_kms`` again
        starts a new one on the same address."""
        if self.kms is not None:
            kms, self.kms = self.kms, None
            self._closers.remove(kms.aclose)
            await kms.aclose()

    async def start_store(self, *, clock: Clock | None = None) -> StoreRuntime:
        self.store = await serve_store(self.settings("store"), clock=clock)
        self._closers.append(self.store.aclose)
        addr = self._started("store", self.store.port)
        if self.kms is not None:  # the kms resolves its callers and records its calls through the store
            await self.kms.use_store(addr, self.pki_dir)
        return self.store

    async def bootstrap_sealed(self, within: float = 10.0) -> None:
        """Wait until the store has sealed the bootstrap keys' secrets (its background task; the first seal
        creates the AWS managed key ``alias/aws/secretsmanager`` in the kms), so tests that count keys or
        cached data keys start from a settled state."""
        if self.store is None or self.store.bootstrap_sealing is None:
            raise RuntimeError("the store is not running")
        await asyncio.wait_for(asyncio.shield(self.store.bootstrap_sealing), within)

    async def credential(self, principal: str) -> Credentials:
        """Credentials of ``principal``: ``user/admin`` → the root admin's access key; ``user/<name>`` → a
        new access key of IAM user ``<name>`` of the root account (created with an allow-all inline policy if
        missing, as legacy ``user/*`` principals were administrators); ``service/rotation`` → a new access key
        of IAM user ``coffer-rotation`` (which may only assume role ``coffer-rotation``: the rotation
        service's own key; ``GatewaySecretsApi.assuming_role`` signs with sessions of the role assumed with
        it). Needs the store started (its tables)."""
        kind, _, name = principal.partition("/")
        if principal == f"user/{ADMIN_USER}" and self.admin is not None:
            return self.admin
        # sealed as IAM CreateAccessKey seals it, when the store runs here
        sealer = self.store.access_key_secrets if self.store is not None else None
        conn = await asyncpg.connect(self.env["COFFER_DATABASE_URL"])
        try:
            if principal == "service/rotation":
                akid, secret = await issue_user_key(conn, ROTATION_NAME, policy=None, secrets_=sealer)
                return Credentials(akid, secret)
            if kind != "user" or not name:
                raise ValueError(f"unsupported test principal {principal!r}")
            akid, secret = await issue_user_key(conn, name, secrets_=sealer)
            return Credentials(akid, secret)
        finally:
            await conn.close()

    async def rotation_credentials(self) -> dict[str, str]:
        """The settings that give the rotation service its access key (IAM user coffer-rotation; the service
        assumes role coffer-rotation with it)."""
        creds = await self.credential("service/rotation")
        values = rotation_env(creds)
        self.env.update(values)
        return values

    async def start_gateway(self) -> GatewayRuntime:
        gateway = await serve_gateway(self.settings("gateway"))
        self.gateway = gateway
        self._closers.append(lambda: gateway.aclose(grace=0.5))
        self._started("gateway", gateway.port)
        if gateway.aws is not None:
            self.env["COFFER_AWS_ADDR"] = f"127.0.0.1:{gateway.aws.port}"
        return gateway

    @property
    def aws_endpoint(self) -> str:
        """The URL of the running gateway's AWS-protocol endpoint (``endpoint_url`` for boto3)."""
        if self.gateway is None or self.gateway.aws is None:
            raise RuntimeError("the gateway (with its AWS-protocol endpoint) is not running")
        return f"https://127.0.0.1:{self.gateway.aws.port}"

    async def start_rotation(self, **overrides: str) -> RotationRuntime:
        """The rotation service (``overrides``: COFFER_* settings for this start only); give the stack the
        rotation service's credentials first (``await stack.rotation_credentials()``) for it to run
        rotations."""
        rotation = await serve_rotation(self.settings("rotation", **overrides))
        self.rotation = rotation
        return rotation

    async def stop_rotation(self) -> None:
        if self.rotation is not None:
            rotation, self.rotation = self.rotation, None
            await rotation.aclose(grace=0.5)

    async def aclose(self) -> None:
        try:
            await self.stop_rotation()
        finally:
            while self._closers:
                await self._closers.pop()()


async def provisioned_stack(*, home: Path, pki_dir: Path, database_url: str = "", **env: str) -> ServiceStack:
    """A stack whose kms and store will use their own roles in ``database_url``'s database (an
    administrator's URL of a fresh database); without a database URL, a stack for the gateway alone.
    ``env``: more settings."""
    values = {**base_env(home, pki_dir), **env}
    dsns: dict[str, str] = {}
    if database_url:
        values["COFFER_DATABASE_URL"] = database_url
        dsns = dict((await dbroles.provision(database_url)).dsns)
    admin = write_admin_bootstrap(Path(values["COFFER_BOOTSTRAP_KEYS_FILE"]))
    return ServiceStack(env=values, dsns=dsns, admin=admin)


def rotation_env(creds: Credentials) -> dict[str, str]:
    return {
        "COFFER_ROTATION_ACCESS_KEY_ID": creds.access_key_id,
        "COFFER_ROTATION_SECRET_ACCESS_KEY": creds.secret_access_key,
    }


async def insert_session(
    conn: asyncpg.Connection, role: str, session_name: str, *, lifetime: dt.timedelta
) -> Credentials:
    """A session of ``role`` (of the root account) written straight into the store's table, for tests of
    what STS cannot issue (an already expired session); everything else assumes roles through STS."""
    akid, secret, token = new_access_key_id(SESSION_PREFIX), new_secret_access_key(), new_session_token()
    await conn.execute(
        """INSERT INTO store.iam_access_keys
             (access_key_id, principal_id, signing_key, session_name, token_sha256, expires_at)
           SELECT $1, id, $2, $3, $4, $5 FROM store.iam_principals
            WHERE account_id = $6 AND kind = 'role' AND name = $7""",
        akid,
        derive_signing_key(secret),
        session_name,
        token_digest(token),
        dt.datetime.now(dt.UTC) + lifetime,
        ROOT_ACCOUNT,
        role,
    )
    return Credentials(akid, secret, token)


#: The stack's admin credentials file (0600, next to the bootstrap keys file), as a deployment's profile.
ADMIN_CREDENTIALS_FILE = "admin-credentials.json"


def write_admin_bootstrap(path: Path) -> Credentials:
    """A new admin access key: its secret in ``admin-credentials.json`` (0600) beside ``path``, and its
    signing key with that file's path in the bootstrap keys file at ``path`` (0600), for the store to insert
    at start and seal the secret of; returns the credentials."""
    akid, secret = new_access_key_id(), new_secret_access_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    creds_file = path.parent / ADMIN_CREDENTIALS_FILE
    fd = os.open(creds_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"access_key_id": akid, "secret_access_key": secret}, fh)
    key = BootstrapKey(
        access_key_id=akid,
        signing_key=derive_signing_key(secret),
        user=ADMIN_USER,
        credentials_file=str(creds_file.resolve()),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"keys": [bootstrap_entry(key)]}, fh)
    return Credentials(akid, secret)


@contextlib.contextmanager
def temporary_postgres(prefix: str = "coffer-test-pg-") -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server in a new temporary directory, stopped and removed afterwards. Not under pytest's
    basetemp: as root the server runs as the 'pgserver' user, which must traverse every parent of its data
    directory, and each new pytest session resets /tmp/pytest-of-<user> to 0700 (so a second, concurrent
    session would lock this one's server out of its own files)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root / "data")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh, empty database (the administrator's URL), dropped afterwards with the services' roles made in
    it (``coffer.dbroles``)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield pg_server.url(name)
    finally:
        admin = await asyncpg.connect(pg_server.url())
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        await dbroles.drop_roles(pg_server.url(), name)  # the services' roles, if the test made them
