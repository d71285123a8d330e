"""``make run``: one whole Coffer deployment on this machine, supervised from the terminal.

``python -m coffer.devrun`` prepares ``COFFER_HOME`` (default ``./.coffer``: dev PKI, KMS root key, an
admin credential), starts embedded PostgreSQL and Redis unless ``COFFER_DATABASE_URL`` / ``COFFER_REDIS_URL``
are set, runs kms → store → gateway → rotation as four OS processes (``python -m coffer.<svc>``, configured
only through COFFER_* environment variables), waits until each answers SERVING on the standard gRPC health
service, writes the CLI profile and waits. Ctrl-C or SIGTERM stops the services (SIGTERM, then SIGKILL after a
timeout), then Redis and PostgreSQL. ``--stop`` (``make stop``) stops a running supervisor and anything a
killed one left behind.

``--regions 2`` (``make run REGIONS=2``) starts two such deployments side by side, regions ``local-1`` (in
``COFFER_HOME``, ports 7443-7446) and ``local-2`` (in ``COFFER_HOME/regions/local-2``, ports 7453-7456), each
with its own PKI, root key, PostgreSQL and Redis, configured as each other's replication peers
(``COFFER_PEERS``: the other region's store endpoint and CA). The profile then lists both regions.

The :class:`Deployment` class does the work (:class:`MultiRegion` for several regions); the end-to-end tests
drive the same classes. This module is a blocking process supervisor (subprocesses, sleeps), not a service:
it never runs inside an event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer import credentials, dbroles
from coffer.core import errors
from coffer.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from coffer.pki import ensure_pki
from coffer.rootkey_file import ensure_root_key
from coffer.rpc.tls import TlsFiles, channel_credentials
from coffer.settings import SERVICES, Peer, Settings, service_env

#: Start order: each wave waits for the previous one to be SERVING. Stopping walks the waves backwards.
START_WAVES: tuple[tuple[str, ...], ...] = (("kms",), ("store",), ("gateway",), ("rotation",))
ADMIN_PRINCIPAL = "user/admin"
#: The rotation service calls the public API (through the gateway) as this principal.
ROTATION_PRINCIPAL = "service/rotation"
DATABASE_NAME = "coffer"
#: The database roles' passwords, under COFFER_HOME (``coffer.dbroles``).
DB_ROLES_FILE = "db-roles.json"
MAX_REGIONS = 9
LOG_TAIL_LINES = 30


class DeploymentError(Exception):
    """The deployment could not start, or a service died; the message says which and shows its log tail."""


# --------------------------------------------------------------------------------------------------- files


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically (a temp file renamed over the target)."""
    if not path.parent.exists():
        _private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a text file ([] when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


# ------------------------------------------------------------------------------------------- collaborators


def ensure_admin_credential(credentials_file: Path, known_token: str | None) -> str:
    """An admin bearer token for the profile. A credential is created only when the credentials file has none
    that the profile knows: on a restart the token in the profile still verifies and is reused; when the file
    is new (or the profile lost its token) a ``user/admin`` credential is added and its token returned."""
    if known_token:
        try:
            credentials.verify_token(credentials.read_credentials(credentials_file), known_token)
        except errors.Unauthenticated:
            pass
        else:
            return known_token
    return credentials.create_credential(credentials_file, principal=ADMIN_PRINCIPAL)


def ensure_service_credential(credentials_file: Path, token_file: Path, principal: str) -> str:
    """A bearer token for a service principal (``service/rotation``), kept in ``token_file`` (0600): reused
    while it still verifies, otherwise a new credential is added and its token written there."""
    try:
        known = token_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        known = ""
    if known:
        try:
            found = credentials.verify_token(credentials.read_credentials(credentials_file), known)
        except errors.Unauthenticated:
            pass
        else:
            if found == principal:
                return known
    token = credentials.create_credential(credentials_file, principal=principal)
    _write_private(token_file, token + "\n")
    return token


# ------------------------------------------------------------------------------------------------- health


def connect_address(addr: str) -> str:
    """Where a client reaches a server bound to ``addr`` (a wildcard host becomes loopback)."""
    host, _, port = addr.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def health_tls(pki_dir: Path, service: str) -> TlsFiles:
    """The gateway is public (plain TLS, CA only); internal services want the operator's certificate."""
    if service == "gateway":
        return TlsFiles(ca=pki_dir / "ca.crt")
    return TlsFiles.for_identity(pki_dir, "operator")


def check_health(address: str, *, tls: TlsFiles, server_name: str, timeout: float = 2.0) -> str:
    """The overall health status name (``SERVING``, ``NOT_SERVING``...) or ``UNAVAILABLE: <why>``."""
    options = [("grpc.ssl_target_name_override", server_name), ("grpc.default_authority", server_name)]
    with grpc.secure_channel(connect_address(address), channel_credentials(tls), options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            return f"{code.name if code else 'UNKNOWN'}: {details}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


# ------------------------------------------------------------------------------------------------ settings


def settings_env(settings: Settings) -> dict[str, str]:
    """Every COFFER_* variable a service needs to rebuild ``settings`` with ``Settings.from_env``."""
    env = {
        "COFFER_HOME": str(settings.home),
        "COFFER_REGION": settings.region,
        "COFFER_ACCOUNT_ID": settings.account_id,
        "COFFER_PARTITION": settings.partition,
        "COFFER_DATABASE_URL": settings.database_url,
        "COFFER_REDIS_URL": settings.redis_url,
        "COFFER_PKI_DIR": str(settings.pki_dir),
        "COFFER_ROOT_KEY_FILE": str(settings.root_key_file),
        "COFFER_CREDENTIALS_FILE": str(settings.credentials_file),
        "COFFER_LOG_LEVEL": settings.log_level,
        "COFFER_DATA_KEY_CACHE_SECONDS": repr(settings.data_key_cache_seconds),
        "COFFER_PURGE_INTERVAL_SECONDS": repr(settings.purge_interval_seconds),
        "COFFER_ROTATION_MAX_TRIES": str(settings.rotation_max_tries),
        "COFFER_ROTATION_BACKOFF_BASE_SECONDS": repr(settings.rotation_backoff_base_seconds),
        "COFFER_ROTATION_LEASE_SECONDS": repr(settings.rotation_lease_seconds),
        "COFFER_ROTATION_POLL_SECONDS": repr(settings.rotation_poll_seconds),
        "COFFER_ROTATION_WORKERS": str(settings.rotation_workers),
        "COFFER_ROTATION_STREAM_PREFIX": settings.rotation_stream_prefix,
        "COFFER_REPLICATION_INTERVAL_SECONDS": repr(settings.replication_interval_seconds),
    }
    if settings.peers:
        env["COFFER_PEERS"] = peers_json(settings.peers)
    for service in SERVICES:
        env[f"COFFER_{service.upper()}_ADDR"] = settings.addr_of(service)
    return env


def peers_json(peers: Iterable[Peer]) -> str:
    """``COFFER_PEERS`` for a list of peers (the inverse of ``coffer.settings.parse_peers``)."""
    return json.dumps(
        [{"region": p.region, "endpoint": p.endpoint, "ca_file": str(p.ca_file)} for p in peers]
    )


def region_name(index: int) -> str:
    """The name of the ``index``-th (0-based) region of a ``make run REGIONS=n`` deployment."""
    return f"local-{index + 1}"


def _shift_port(addr: str, offset: int) -> str:
    host, _, port = addr.rpartition(":")
    return f"{host}:{int(port) + offset}"


def region_envs(base: Mapping[str, str], count: int) -> list[dict[str, str]]:
    """COFFER_* settings of ``count`` regions on one machine (without their peers: see :func:`with_peers`).

    The first region is ``base`` as it is, named ``local-1``. Region ``i`` (0-based) is ``local-<i+1>`` in
    ``$COFFER_HOME/regions/local-<i+1>`` (its own PKI, root key, credentials, data and logs), on the first
    region's ports plus ``10*i``; with an external PostgreSQL it uses the database ``<name>_local_<i+1>``
    (created when missing), with an external Redis its own rotation stream prefix."""
    first = {k: v for k, v in base.items() if k.startswith("COFFER_")}
    first["COFFER_REGION"] = region_name(0)
    settings = Settings.from_env(first)
    envs = [first]
    for index in range(1, count):
        region = region_name(index)
        env = {
            k: v
            for k, v in first.items()
            if k
            not in {
                "COFFER_PKI_DIR",
                "COFFER_ROOT_KEY_FILE",
                "COFFER_CREDENTIALS_FILE",
                "COFFER_LOG_FILE",
                "COFFER_ROTATION_TOKEN",
                "COFFER_PEERS",
            }
        }
        env["COFFER_HOME"] = str(settings.home / "regions" / region)
        env["COFFER_REGION"] = region
        for service in SERVICES:
            env[f"COFFER_{service.upper()}_ADDR"] = _shift_port(settings.addr_of(service), 10 * index)
        if settings.database_url:
            database = urlsplit(settings.database_url).path.lstrip("/") or DATABASE_NAME
            env["COFFER_DATABASE_URL"] = with_database(
                settings.database_url, f"{database}_{region.replace('-', '_')}"
            )
        env["COFFER_ROTATION_STREAM_PREFIX"] = f"{settings.rotation_stream_prefix}:{region}"
        envs.append(env)
    return envs


def with_peers(envs: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Each region's settings plus ``COFFER_PEERS``: every other region's store endpoint and CA file."""
    settings = [Settings.from_env(env) for env in envs]
    out = []
    for env, own in zip(envs, settings, strict=True):
        peers = [
            {
                "region": other.region,
                "endpoint": connect_address(other.store_addr),
                "ca_file": str(other.pki_dir / "ca.crt"),
            }
            for other in settings
            if other.region != own.region
        ]
        out.append({**env, "COFFER_PEERS": json.dumps(peers)})
    return out


def with_database(url: str, database: str) -> str:
    """``url`` (a PostgreSQL URL) pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def _ensure_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------- deployment


@dataclass
class ServiceProcess:
    name: str
    address: str
    proc: subprocess.Popen[bytes]
    log_file: Path
    out_file: Path

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = []
        for path in (self.log_file, self.out_file):
            text = tail(path, lines)
            if text:
                parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts) if parts else f"(no output in {self.log_file} or {self.out_file})"


@dataclass(frozen=True)
class DeploymentInfo:
    """How to reach a running deployment (what the profile says, plus where its files are)."""

    endpoint: str
    ca_file: Path
    token: str
    region: str
    services: dict[str, str]
    home: Path
    pki_dir: Path
    log_dir: Path
    profile_path: Path
    database_url: str
    redis_url: str


@dataclass
class Deployment:
    """One region: PostgreSQL + Redis (embedded, or given as URLs in ``settings``) and the four services.

    ``start()`` = ``prepare()`` (home, PKI, root key, admin credential) → ``start_servers()`` →
    ``start_services()`` (waves, each waiting for SERVING) → ``write_profile()``; ``stop()`` undoes it in
    reverse and is safe to call at any point, more than once. ``settings`` may not use port 0 (the services
    must know each other's addresses before they start)."""

    settings: Settings
    python: str = sys.executable
    user_profile: Path | None = None
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    health_timeout: float = 60.0
    stop_timeout: float = 15.0
    echo: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    #: With an external PostgreSQL (``settings.database_url``): create its database when it is missing.
    create_database: bool = False

    admin_token: str = ""
    rotation_token: str = ""
    database_url: str = ""
    redis_url: str = ""
    service_dsns: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    _pg: EmbeddedPostgres | None = None
    _redis: EmbeddedRedis | None = None
    _lock: IO[str] | None = None

    # ---- paths
    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def pg_data_dir(self) -> Path:
        return self.home / "pg"

    @property
    def redis_data_dir(self) -> Path:
        return self.home / "redis"

    @property
    def profile_path(self) -> Path:
        return self.home / "profile.json"

    @property
    def ca_file(self) -> Path:
        return self.settings.pki_dir / "ca.crt"

    @property
    def endpoint(self) -> str:
        return connect_address(self.settings.gateway_addr)

    @classmethod
    def in_home(
        cls, home: Path, *, free_ports: bool = True, env: Mapping[str, str] | None = None, **options: Any
    ) -> Deployment:
        """A deployment under ``home`` configured like ``make run`` (``env`` adds COFFER_* settings), on free
        ports unless ``free_ports=False`` (then the defaults 7443-7446). ``options`` go to the constructor."""
        values = {"COFFER_HOME": str(home), **(env or {})}
        if free_ports:
            for service in SERVICES:
                values.setdefault(f"COFFER_{service.upper()}_ADDR", f"127.0.0.1:{free_port()}")
        return cls(Settings.from_env(values), **options)

    def info(self) -> DeploymentInfo:
        return DeploymentInfo(
            endpoint=self.endpoint,
            ca_file=self.ca_file,
            token=self.admin_token,
            region=self.settings.region,
            services={name: connect_address(self.settings.addr_of(name)) for name in SERVICES},
            home=self.home,
            pki_dir=self.settings.pki_dir,
            log_dir=self.log_dir,
            profile_path=self.profile_path,
            database_url=self.database_url,
            redis_url=self.redis_url,
        )

    # ---- lifecycle
    def start(self, *, stop_on_failure: bool = True) -> None:
        """Bring the whole deployment up; on failure everything started so far is stopped again (unless the
        caller wants to report the failure first and call ``stop()`` itself)."""
        try:
            self.prepare()
            self.start_servers()
            self.start_services()
            self.write_profile()
        except Exception:
            if stop_on_failure:
                self.stop()
            raise

    def prepare(self) -> None:
        for service in SERVICES:
            port = self.settings.addr_of(service).rpartition(":")[2]
            if port in ("", "0"):
                raise DeploymentError(
                    f"{service}: a fixed port is needed, got {self.settings.addr_of(service)!r}"
                )
        _private_dir(self.home)
        self._take_lock()
        _private_dir(self.log_dir)
        _private_dir(self.run_dir)
        stop_leftovers(self.home, echo=self.echo)
        ensure_pki(self.settings.pki_dir, region=self.settings.region)
        ensure_root_key(self.settings.root_key_file)
        self.admin_token = ensure_admin_credential(self.settings.credentials_file, self._known_token())
        self.rotation_token = ensure_service_credential(
            self.settings.credentials_file, self.home / "rotation.token", ROTATION_PRINCIPAL
        )

    def start_servers(self) -> None:
        self.database_url = self.settings.database_url
        self.redis_url = self.settings.redis_url
        if self.database_url and self.create_database:
            name = urlsplit(self.database_url).path.lstrip("/")
            asyncio.run(_ensure_database(with_database(self.database_url, "postgres"), name))
        if not self.database_url:
            self._pg = EmbeddedPostgres(self.pg_data_dir)
            admin_url = self._pg.start()
            asyncio.run(_ensure_database(admin_url, DATABASE_NAME))
            self.database_url = with_database(admin_url, DATABASE_NAME)
            if os.geteuid() == 0:
                # As root the server runs as the 'pgserver' user, which pgserver lets traverse every parent of
                # the data dir (it adds o+rx). Traversal is all it needs: take the read bit back.
                os.chmod(self.home, 0o711)
            self.echo(f"postgres  running, data in {self.pg_data_dir}")
        # Each data service logs in with its own role (passwords kept 0600 in COFFER_HOME for the next run).
        self.service_dsns = asyncio.run(dbroles.ensure_roles(self.database_url, self.home / DB_ROLES_FILE))
        if not self.redis_url:
            port_file = self.redis_data_dir / "port"
            port = int(port_file.read_text()) if port_file.exists() else 0
            if port and not _port_free(port):
                self.echo(f"redis: port {port} is taken by another program; choosing a new one")
                port = 0
            self._redis = EmbeddedRedis(self.redis_data_dir, port=port or free_port())
            old_umask = os.umask(0o077)  # valkey-server inherits it: its RDB/AOF files become 0600
            try:
                self.redis_url = self._redis.start()
            finally:
                os.umask(old_umask)
            _write_private(port_file, str(self._redis.port))
            self.echo(f"redis     running on 127.0.0.1:{self._redis.port}, data in {self.redis_data_dir}")

    def start_services(self) -> None:
        for wave in START_WAVES:
            for name in wave:
                self._spawn(name)
            for name in wave:
                self._wait_serving(self.processes[name])
                self.echo(f"{name:<9} SERVING on {self.settings.addr_of(name)}")

    def profile_entry(self) -> dict[str, Any]:
        """This region's part of the CLI profile (endpoint, CA file, admin token, services, operator cert)."""
        pki = self.settings.pki_dir
        return {
            "endpoint": self.endpoint,
            "ca_file": str(self.ca_file),
            "token": self.admin_token,
            "region": self.settings.region,
            "services": self.info().services,
            "operator_cert": str(pki / "operator.crt"),
            "operator_key": str(pki / "operator.key"),
        }

    def write_profile(self, regions: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Write the CLI profile (and the user's copy): this region's keys at the top level, plus
        ``"regions"`` when there are several."""
        profile = self.profile_entry()
        if regions:
            profile["regions"] = {
                name: {k: v for k, v in entry.items() if k != "region"} for name, entry in regions.items()
            }
        text = json.dumps(profile, indent=2) + "\n"
        _write_private(self.profile_path, text)
        if self.user_profile is not None:
            _private_dir(self.user_profile.parent)
            _write_private(self.user_profile, text)

    def stop(self) -> dict[str, int]:
        """Stop services (last wave first), then Redis, then PostgreSQL. Returns each service's exit code."""
        try:
            self.stop_services()
        finally:
            try:
                if self._redis is not None:
                    self._redis.stop()
                    self._redis = None
                    self.echo("redis     stopped")
            finally:
                if self._pg is not None:
                    self._pg.stop()
                    self._pg = None
                    self.echo("postgres  stopped")
                self._release_lock()
        return dict(self.exit_codes)

    def stop_services(self) -> None:
        for wave in reversed(START_WAVES):
            running = [self.processes[name] for name in wave if name in self.processes]
            for sp in running:
                if sp.proc.poll() is None:
                    sp.proc.send_signal(signal.SIGTERM)
            for sp in running:
                code = _wait_or_kill(sp.proc, self.stop_timeout)
                killed = code == -signal.SIGKILL
                self.exit_codes[sp.name] = code
                self.processes.pop(sp.name, None)
                (self.run_dir / f"{sp.name}.pid").unlink(missing_ok=True)
                note = " after SIGKILL (did not stop within the timeout)" if killed else ""
                self.echo(f"{sp.name:<9} stopped (exit {code}){note}")

    def dead_services(self) -> list[ServiceProcess]:
        return [sp for sp in self.processes.values() if sp.proc.poll() is not None]

    def health(self) -> dict[str, str]:
        """Each service's health status as the operator sees it."""
        return {
            name: check_health(
                self.settings.addr_of(name), tls=health_tls(self.settings.pki_dir, name), server_name=name
            )
            for name in SERVICES
        }

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- internals
    def service_env(self, name: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(settings_env(self.settings))
        env["COFFER_DATABASE_URL"] = self.database_url
        env["COFFER_REDIS_URL"] = self.redis_url
        env["COFFER_LOG_FILE"] = str(self.log_dir / f"{name}.log")
        env["PYTHONUNBUFFERED"] = "1"
        if not self.settings.peers:
            env.pop("COFFER_PEERS", None)
        if name == "rotation":
            env["COFFER_ROTATION_TOKEN"] = self.rotation_token
        if name in self.service_dsns:
            env["COFFER_DATABASE_URL"] = self.service_dsns[name]
        return service_env(name, env)

    def kill_service(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one service process and wait for it to exit (tests: crash a worker mid-step)."""
        sp = self.processes.pop(name)
        if sp.proc.poll() is None:
            sp.proc.send_signal(sig)
        code = _wait_or_kill(sp.proc, self.stop_timeout)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        return code

    def start_service(self, name: str) -> None:
        """(Re)start one service process and wait until it is SERVING."""
        self._spawn(name)
        self._wait_serving(self.processes[name])

    def _spawn(self, name: str) -> None:
        out_file = self.log_dir / f"{name}.out"
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                [self.python, "-m", f"coffer.{name}"],
                env=self.service_env(name),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops services in order
                umask=0o077,
            )
        finally:
            os.close(fd)
        _write_private(self.run_dir / f"{name}.pid", str(proc.pid))
        self.processes[name] = ServiceProcess(
            name=name,
            address=self.settings.addr_of(name),
            proc=proc,
            log_file=self.log_dir / f"{name}.log",
            out_file=out_file,
        )

    def _wait_serving(self, sp: ServiceProcess) -> None:
        tls = health_tls(self.settings.pki_dir, sp.name)
        deadline = time.monotonic() + self.health_timeout
        status = "not checked yet"
        while True:
            code = sp.proc.poll()
            if code is not None:
                raise DeploymentError(f"{sp.name} exited with code {code} while starting.\n{sp.log_tail()}")
            status = check_health(sp.address, tls=tls, server_name=sp.name, timeout=1.0)
            if status == "SERVING":
                return
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"{sp.name} did not report SERVING on {sp.address} within {self.health_timeout:.0f}s "
                    f"(last answer: {status}).\n{sp.log_tail()}"
                )
            time.sleep(0.1)

    def _known_token(self) -> str | None:
        try:
            token = json.loads(self.profile_path.read_text()).get("token")
        except (FileNotFoundError, ValueError, AttributeError):
            return None
        return token if isinstance(token, str) and token else None

    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        fd = os.open(self.home / "devrun.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        lock = os.fdopen(fd, "a+", encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DeploymentError(
                f"Another Coffer supervisor is using {self.home}: "
                "stop it first (Ctrl-C there, or `make stop`)."
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def _prefixed(echo: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda line: echo(prefix + line)


@dataclass
class MultiRegion:
    """Several regions on one machine (``make run REGIONS=2``), each a whole :class:`Deployment`, peers of
    each other. ``start()`` prepares every region first (so each region's CA exists before any store reads
    its peers), then starts them one after the other and writes one profile listing all of them (in the
    first region's home and, when given, ``user_profile``); ``stop()`` stops the last region first."""

    deployments: list[Deployment]
    user_profile: Path | None = None

    @classmethod
    def from_envs(
        cls, envs: Sequence[Mapping[str, str]], *, user_profile: Path | None = None, **options: Any
    ) -> MultiRegion:
        """Regions from their COFFER_* settings (peers are added: see :func:`with_peers`); ``options`` go to
        each :class:`Deployment` (``echo``: lines are prefixed with the region)."""
        echo: Callable[[str], None] = options.pop("echo", lambda line: print(line, flush=True))
        deployments = []
        for env in with_peers(envs):
            settings = Settings.from_env(env)
            deployments.append(Deployment(settings, echo=_prefixed(echo, f"[{settings.region}] "), **options))
        return cls(deployments, user_profile=user_profile)

    @property
    def primary(self) -> Deployment:
        return self.deployments[0]

    @property
    def profile_path(self) -> Path:
        return self.primary.profile_path

    def region(self, name: str) -> Deployment:
        for deployment in self.deployments:
            if deployment.settings.region == name:
                return deployment
        raise KeyError(name)

    def start(self, *, stop_on_failure: bool = True) -> None:
        try:
            for deployment in self.deployments:
                deployment.prepare()
            for deployment in self.deployments:
                deployment.start_servers()
                deployment.start_services()
                deployment.write_profile()
            self.write_profile()
        except BaseException:
            if stop_on_failure:
                self.stop()
            raise

    def write_profile(self) -> None:
        regions = {d.settings.region: d.profile_entry() for d in self.deployments}
        primary = self.primary
        saved, primary.user_profile = primary.user_profile, self.user_profile
        try:
            primary.write_profile(regions)
        finally:
            primary.user_profile = saved

    def stop(self) -> dict[str, int]:
        """Stop every region (last first). Returns ``{"<region>/<service>": exit code}``."""
        codes: dict[str, int] = {}
        errors_seen: list[BaseException] = []
        for deployment in reversed(self.deployments):
            try:
                for name, code in deployment.stop().items():
                    codes[f"{deployment.settings.region}/{name}"] = code
            except Exception as exc:  # stop the other regions anyway, then report
                errors_seen.append(exc)
        if errors_seen:
            raise errors_seen[0]
        return codes

    def dead_services(self) -> list[tuple[str, ServiceProcess]]:
        return [(d.settings.region, sp) for d in self.deployments for sp in d.dead_services()]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the servers themselves: connections in TIME_WAIT do not make a port busy, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_leftovers(home: Path, *, echo: Callable[[str], None], timeout: float = 15.0) -> None:
    """Stop service processes, Redis and PostgreSQL that a killed supervisor left running for ``home``."""
    run_dir = home / "run"
    leftovers: list[int] = []
    for wave in reversed(START_WAVES):
        for name in wave:
            pid_file = run_dir / f"{name}.pid"
            try:
                pid = int(pid_file.read_text().strip())
            except (FileNotFoundError, ValueError):
                continue
            if _pid_alive(pid) and f"coffer.{name}" in _pid_cmdline(pid):
                echo(f"{name:<9} left running by an earlier supervisor (pid {pid}): stopping it")
                os.kill(pid, signal.SIGTERM)
                leftovers.append(pid)
            pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in leftovers) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in leftovers:
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    redis_dir = home / "redis"
    port_file, pw_file = redis_dir / "port", redis_dir / "password"
    if port_file.exists() and pw_file.exists():
        port = int(port_file.read_text().strip() or 0)
        leftover = EmbeddedRedis(redis_dir, port=port, password=pw_file.read_text().strip())
        if port and not _port_free(port) and leftover._ping():
            echo(f"redis     left running on port {port}: shutting it down")
            with contextlib.suppress(OSError):
                leftover._command("SHUTDOWN", "SAVE")
            deadline = time.monotonic() + timeout
            while not _port_free(port) and time.monotonic() < deadline:
                time.sleep(0.05)


def _postmaster_running(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip())
    except (FileNotFoundError, ValueError):
        return False
    return _pid_alive(pid)


def stop_all(home: Path, *, echo: Callable[[str], None], timeout: float = 30.0) -> int:
    """``make stop``: ask a running supervisor to stop; then stop whatever a killed one left behind."""
    lock_file = home / "devrun.lock"
    if lock_file.exists():
        with open(lock_file, "a+", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
            except BlockingIOError:
                lock.seek(0)
                pid = int(lock.read().strip() or 0)
                if pid:
                    echo(f"asking the supervisor (pid {pid}) to stop")
                    os.kill(pid, signal.SIGTERM)
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the supervisor has stopped everything
                fcntl.flock(lock, fcntl.LOCK_UN)
    homes = [home, *sorted(p for p in (home / "regions").glob("*") if p.is_dir())]
    for region_home in homes:  # a `make run REGIONS=n` keeps the other regions under home/regions/
        stop_leftovers(region_home, echo=echo, timeout=timeout)
        pgdata = region_home / "pg"
        if _postmaster_running(pgdata):
            pg = EmbeddedPostgres(pgdata)
            pg.start()  # attaches to the running postmaster
            pg.stop()
            echo(f"postgres  stopped ({region_home})")
    return 0


# -------------------------------------------------------------------------------------------------- main


def _banner(deployment: Deployment, *, wrote_user_profile: bool) -> Iterator[str]:
    s = deployment.settings
    coffer_cmd = Path(deployment.python).parent / "coffer"
    cli = str(coffer_cmd) if coffer_cmd.exists() else f"{deployment.python} -m coffer.cli.main"
    yield ""
    yield f"Coffer is running (region {s.region}, account {s.account_id}). Ctrl-C stops everything."
    for name in SERVICES:
        kind = "public, TLS + bearer token" if name == "gateway" else "internal, mTLS"
        yield f"  {name:<9} {connect_address(s.addr_of(name)):<22} {kind}"
    yield f"  logs      {deployment.log_dir}/<service>.log"
    yield ""
    yield f"  endpoint  {deployment.endpoint}"
    yield f"  CA file   {deployment.ca_file}"
    where = f"{deployment.profile_path}" + (f" and {deployment.user_profile}" if wrote_user_profile else "")
    yield f"The profile is written ({where}), so the CLI needs no flags; try:"
    yield f"  {cli} status"
    yield f"  {cli} secretsmanager create-secret --name demo/hello --secret-string 'hi there'"
    yield f"  {cli} secretsmanager get-secret-value --secret-id demo/hello"
    yield "Or, for other clients:"
    yield f"  export COFFER_ENDPOINT={deployment.endpoint} COFFER_CA_FILE={deployment.ca_file}"
    yield f"  export COFFER_TOKEN={deployment.admin_token}"
    yield ""


def _multi_banner(regions: MultiRegion, *, wrote_user_profile: bool) -> Iterator[str]:
    primary = regions.primary
    coffer_cmd = Path(primary.python).parent / "coffer"
    cli = str(coffer_cmd) if coffer_cmd.exists() else f"{primary.python} -m coffer.cli.main"
    names = [d.settings.region for d in regions.deployments]
    yield ""
    yield (
        f"Coffer is running in {len(names)} regions ({', '.join(names)}; account "
        f"{primary.settings.account_id}), peers of each other. Ctrl-C stops everything."
    )
    for deployment in regions.deployments:
        s = deployment.settings
        yield f"  {s.region}: home {deployment.home}"
        for name in SERVICES:
            kind = "public, TLS + bearer token" if name == "gateway" else "internal, mTLS"
            yield f"    {name:<9} {connect_address(s.addr_of(name)):<22} {kind}"
    where = f"{regions.profile_path}" + (f" and {regions.user_profile}" if wrote_user_profile else "")
    yield ""
    yield f"The profile lists every region ({where}); --region picks one (default {names[0]}):"
    yield f"  {cli} status"
    yield (
        f"  {cli} secretsmanager create-secret --name demo/hello --secret-string 'hi there' "
        f"--add-replica-regions Region={names[1]}"
    )
    yield f"  {cli} secretsmanager get-secret-value --secret-id demo/hello --region {names[1]}"
    yield ""


class _StopRequested(BaseException):
    """Raised by the signal handler while starting (so start-up is abandoned and cleaned up)."""


def _dead(target: Deployment | MultiRegion) -> list[tuple[str, ServiceProcess]]:
    if isinstance(target, MultiRegion):
        return [(f"[{region}] ", sp) for region, sp in target.dead_services()]
    return [("", sp) for sp in target.dead_services()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coffer.devrun", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--regions", type=int, default=1, help="number of regions local-1..local-N (default 1)"
    )
    parser.add_argument("--stop", action="store_true", help="stop a running (or killed) `make run` and exit")
    parser.add_argument(
        "--no-user-profile", action="store_true", help="do not write ~/.config/coffer/profile.json"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    # pgserver's platformdirs falls back to /tmp for its lock file when XDG_RUNTIME_DIR is unset: harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

    def echo(line: str) -> None:
        print(line, flush=True)

    if args.stop:
        return stop_all(settings.home, echo=echo)
    if not 1 <= args.regions <= MAX_REGIONS:
        print(f"--regions {args.regions}: give a number from 1 to {MAX_REGIONS}.", file=sys.stderr)
        return 2

    user_profile = None if args.no_user_profile else Path.home() / ".config" / "coffer" / "profile.json"
    target: Deployment | MultiRegion
    if args.regions == 1:
        target = Deployment(settings, user_profile=user_profile, echo=echo)
    else:
        target = MultiRegion.from_envs(
            region_envs(os.environ, args.regions), user_profile=user_profile, echo=echo
        )
        for deployment in target.deployments[1:]:
            deployment.create_database = bool(deployment.settings.database_url)
    state: dict[str, Any] = {"starting": True, "stopping": False, "signal": None}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if state["stopping"]:
            return
        state["signal"] = signum
        if state["starting"]:
            raise _StopRequested

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    rc = 0
    try:
        target.start(stop_on_failure=False)
        state["starting"] = False
        if isinstance(target, MultiRegion):
            banner = _multi_banner(target, wrote_user_profile=user_profile is not None)
        else:
            banner = _banner(target, wrote_user_profile=user_profile is not None)
        for line in banner:
            echo(line)
        while state["signal"] is None:
            dead = _dead(target)
            if dead:
                for where, sp in dead:
                    code = sp.proc.returncode
                    echo(f"{where}{sp.name} exited unexpectedly with code {code}.\n{sp.log_tail()}")
                rc = 1
                break
            time.sleep(0.5)
    except _StopRequested:
        pass
    except DeploymentError as exc:
        echo(f"coffer: {exc}")
        rc = 1
    except Exception as exc:  # PostgreSQL/Redis/PKI trouble: say what failed, then stop what did start
        echo(f"coffer: could not start: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        state["stopping"] = True
        if state["signal"] is not None:
            echo(f"\n{signal.Signals(state['signal']).name} received: stopping")
        codes = target.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = {name: code for name, code in codes.items() if code != 0}
    if failed:
        echo("services that did not exit cleanly: " + ", ".join(f"{n} ({c})" for n, c in failed.items()))
        rc = rc or 1
    if rc == 0:
        echo("Coffer stopped.")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
