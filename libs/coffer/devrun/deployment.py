"""One region of a ``make run`` deployment (:class:`Deployment`) and several side by side
(:class:`MultiRegion`): the home directory, dev PKI, KMS root key, credentials, PostgreSQL and Redis (embedded
unless given as URLs), the four service processes and the CLI profile.

Blocking code (subprocesses, sleeps): it never runs inside an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import asyncpg

from coffer import dbroles
from coffer.client.credentials import Credentials
from coffer.devrun import iam_keys
from coffer.devrun.config import (
    DATABASE_NAME,
    DB_ROLES_FILE,
    MAX_REGIONS,
    MAX_REPLICAS,
    REPLICA_PORT_STEP,
    aws_endpoint_url,
    connect_address,
    console_url,
    instance_waves,
    peers_json,
    replica_addr,
    replica_index,
    service_env,
    service_of,
    with_database,
    with_peers,
)
from coffer.devrun.processes import (
    LOCK_FILE_NAME,
    STATE_FILE_NAME,
    DeploymentError,
    ServiceProcess,
    check_health,
    health_tls,
    port_free,
    private_dir,
    stop_leftovers,
    write_private,
)
from coffer.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from coffer.pki import ensure_pki, install_service_dir
from coffer.rootkey_file import ensure_root_key
from coffer.settings import DEFAULT_PORTS, SERVICES, Peer, Settings

ADMIN_PRINCIPAL = "arn:aws:iam::000000000000:user/admin"


def print_line(line: str) -> None:
    print(line, flush=True)


# ------------------------------------------------------------------------------------------- collaborators


async def _ensure_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------- deployment


#: ``make run``'s Prometheus ports: each service's gRPC port plus this (7443 → 9464 for the gateway).
METRICS_PORT_OFFSET = 2021


@dataclass(frozen=True)
class DeploymentInfo:
    """How to reach a running deployment (what the profile says, plus where its files are)."""

    endpoint: str
    ca_file: Path
    credentials: Credentials
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
    echo: Callable[[str], None] = print_line
    #: With an external PostgreSQL (``settings.database_url``): create its database when it is missing.
    create_database: bool = False
    #: Each service instance's Prometheus port (``COFFER_METRICS_ADDR``, on loopback); unset: its gRPC port
    #: plus METRICS_PORT_OFFSET (``make run``: 9464-9467, region ``i`` adding ``10*i`` as its other ports).
    metrics_ports: dict[str, int] = field(default_factory=dict)
    #: ``make run REPLICAS=n``: how many processes of every service (``<service>``, ``<service>-2``...).
    replicas: int = 1
    #: Where replicas other than the first listen, when not on ``make run``'s ports (REPLICA_PORT_STEP
    #: above the first replica's): instance name → address.
    instance_addrs: dict[str, str] = field(default_factory=dict)

    #: The root admin's access key (its secret is kept in the 0600 profile only).
    admin_credentials: Credentials | None = None
    #: The rotation service's session credentials (role coffer-rotation).
    rotation_credentials: Credentials | None = None
    database_url: str = ""
    redis_url: str = ""
    #: Each data service's own database login (``coffer.dbroles``), set by ``start_servers``.
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

    def service_pki_dir(self, name: str) -> Path:
        """The PKI directory the service ``name`` is given (``COFFER_PKI_DIR``): the CA certificate and its
        own files only (``coffer.pki.install_service_dir``). The issuing directory (``settings.pki_dir``, with
        the CA key and every identity's key) is the supervisor's and the operator's, never a service's."""
        return self.home / "service-pki" / name

    @property
    def ca_file(self) -> Path:
        return self.settings.pki_dir / "ca.crt"

    @property
    def endpoint(self) -> str:
        """Where clients reach the gateway: its address, or its replicas' as ``ip:port,ip:port`` (the SDK and
        CLI spread calls over them and move off a dead one)."""
        return self.targets_of("gateway")

    @property
    def waves(self) -> tuple[tuple[str, ...], ...]:
        """The service instances in start order (each wave's replicas start together)."""
        return instance_waves(self.replicas)

    @property
    def instances(self) -> list[str]:
        return [name for wave in self.waves for name in wave]

    def instance_addr(self, name: str) -> str:
        """Where the service instance ``name`` (``store``, ``store-2``...) listens."""
        if name in self.instance_addrs:
            return self.instance_addrs[name]
        return replica_addr(self.settings.addr_of(service_of(name)), replica_index(name))

    def targets_of(self, service: str) -> str:
        """How the other services reach ``service``: its one address, or every replica's, comma-separated."""
        names = [name for name in self.instances if service_of(name) == service]
        return ",".join(connect_address(self.instance_addr(name)) for name in names)

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
            waves = instance_waves(int(options.get("replicas", 1)))
            names = [name for wave in waves for name in wave]
            options.setdefault("metrics_ports", {name: free_port() for name in names})
            options.setdefault(
                "instance_addrs",
                {name: f"127.0.0.1:{free_port()}" for name in names if replica_index(name) > 0},
            )
        return cls(Settings.from_env(values), **options)

    def metrics_url(self, name: str) -> str:
        return f"http://{self.metrics_addr(name)}/metrics"

    def metrics_addr(self, name: str) -> str:
        """Where service ``name`` serves its Prometheus metrics (``COFFER_METRICS_ADDR``): on ``make run``'s
        own ports (the defaults, or region ``i``'s, shifted by ``10*i``) its gRPC port plus
        METRICS_PORT_OFFSET; on ports chosen otherwise a free port, chosen once (an offset from arbitrary
        ports could land on a taken one)."""
        port = self.metrics_ports.get(name)
        if port is None:
            grpc_port = int(self.instance_addr(name).rpartition(":")[2])
            replica, shift = divmod(grpc_port - DEFAULT_PORTS[service_of(name)], REPLICA_PORT_STEP)
            dev_ports = (
                name not in self.instance_addrs
                and 0 <= replica < MAX_REPLICAS
                and shift < 10 * MAX_REGIONS
                and shift % 10 == 0
            )
            port = grpc_port + METRICS_PORT_OFFSET if dev_ports else free_port()
            self.metrics_ports[name] = port
        return f"127.0.0.1:{port}"

    def info(self) -> DeploymentInfo:
        return DeploymentInfo(
            endpoint=self.endpoint,
            ca_file=self.ca_file,
            credentials=self.admin,
            region=self.settings.region,
            services={name: connect_address(self.instance_addr(name)) for name in self.instances},
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
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise DeploymentError(f"replicas: give a number from 1 to {MAX_REPLICAS}, got {self.replicas}")
        for service in SERVICES:
            port = self.settings.addr_of(service).rpartition(":")[2]
            if port in ("", "0"):
                raise DeploymentError(
                    f"{service}: a fixed port is needed, got {self.settings.addr_of(service)!r}"
                )
        private_dir(self.home)
        self._take_lock()
        private_dir(self.log_dir)
        private_dir(self.run_dir)
        stop_leftovers(self.home, echo=self.echo)
        ensure_pki(self.settings.pki_dir, region=self.settings.region)
        if self.settings.seal == "file":  # COFFER_SEAL=shamir: no key file; `coffer operator init` makes it
            ensure_root_key(self.settings.root_key_file)
        self.admin_credentials = iam_keys.ensure_admin(self.profile_path)
        rotation_file = self.home / iam_keys.ROTATION_FILE_NAME
        self.rotation_credentials = iam_keys.ensure_rotation_key(rotation_file)
        iam_keys.write_bootstrap(
            self.bootstrap_keys_file,
            self.admin_credentials,
            self.rotation_credentials,
            admin_file=self.profile_path,
            rotation_file=rotation_file,
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
            # As root the server runs as the 'pgserver' user; EmbeddedPostgres leaves every directory above
            # the home as it was (the home itself becomes traversable, 0711, when the server needs that).
            self.echo(f"postgres  running, data in {self.pg_data_dir.resolve()}")
        # Each data service logs in with its own role (passwords kept 0600 in COFFER_HOME for the next run).
        self.service_dsns = asyncio.run(dbroles.ensure_roles(self.database_url, self.home / DB_ROLES_FILE))
        if not self.redis_url:
            port_file = self.redis_data_dir / "port"
            port = int(port_file.read_text()) if port_file.exists() else 0
            if port and not port_free(port):
                self.echo(f"redis: port {port} is taken by another program; choosing a new one")
                port = 0
            self._redis = EmbeddedRedis(self.redis_data_dir, port=port or free_port())
            old_umask = os.umask(0o077)  # valkey-server inherits it: its RDB/AOF files become 0600
            try:
                self.redis_url = self._redis.start()
            finally:
                os.umask(old_umask)
            write_private(port_file, str(self._redis.port))
            self.echo(f"redis     running on 127.0.0.1:{self._redis.port}, data in {self.redis_data_dir}")

    def start_services(self) -> None:
        for wave in self.waves:
            for name in wave:
                self._spawn(name)
            for name in wave:
                self.processes[name].wait_serving(self.settings.pki_dir, self.health_timeout)
                self.echo(f"{name:<9} SERVING on {self.instance_addr(name)}")

    def profile_entry(self) -> dict[str, Any]:
        """This region's part of the CLI profile (endpoint, CA file, the admin's access key, services,
        operator cert)."""
        pki = self.settings.pki_dir
        return {
            "endpoint": self.endpoint,
            "ca_file": str(self.ca_file),
            "access_key_id": self.admin.access_key_id,
            "secret_access_key": self.admin.secret_access_key,
            "region": self.settings.region,
            "aws_endpoint_url": aws_endpoint_url(self.settings),
            "console_url": console_url(self.settings),
            "services": self.info().services,
            "metrics": {name: self.metrics_url(name) for name in self.instances},
            "operator_cert": str(pki / "operator.crt"),
            "operator_key": str(pki / "operator.key"),
            # Each service's restarts, kept by the supervisor while it runs (``coffer status`` shows them).
            "supervisor_state": str(self.run_dir / STATE_FILE_NAME),
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
        write_private(self.profile_path, text)
        if self.user_profile is not None:
            private_dir(self.user_profile.parent)
            write_private(self.user_profile, text)

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
        for wave in reversed(self.waves):
            running = [self.processes[name] for name in wave if name in self.processes]
            for sp in running:
                sp.signal(signal.SIGTERM)
            for sp in running:
                code = sp.reap(self.stop_timeout)
                killed = code == -signal.SIGKILL
                self.exit_codes[sp.name] = code
                self.processes.pop(sp.name, None)
                note = " after SIGKILL (did not stop within the timeout)" if killed else ""
                self.echo(f"{sp.name:<9} stopped (exit {code}){note}")

    def dead_services(self) -> list[ServiceProcess]:
        return [sp for sp in self.processes.values() if sp.proc.poll() is not None]

    def health(self) -> dict[str, str]:
        """Each service's health status as the operator sees it."""
        return {
            name: check_health(
                self.instance_addr(name),
                tls=health_tls(self.settings.pki_dir, service_of(name)),
                service=service_of(name),
            )
            for name in self.instances
        }

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- internals
    def service_env(self, name: str) -> dict[str, str]:
        """The environment of the service instance ``name`` (``store``, ``store-2``...): its service's own
        settings (``config.service_env``) with its own PKI directory, log file and addresses (it listens on
        its own; it calls every replica of the others); the store's peers name the copies of their CA
        certificates kept in its PKI directory."""
        service = service_of(name)
        env = service_env(
            service,
            self.settings,
            base_env=self.base_env,
            database_url=self.database_url,
            redis_url=self.redis_url,
            log_dir=self.log_dir,
            rotation_credentials=self.rotation_credentials,
            service_dsns=self.service_dsns,
            bootstrap_keys_file=self.bootstrap_keys_file,
        )
        env["COFFER_PKI_DIR"] = str(self.service_pki_dir(service))
        env["COFFER_METRICS_ADDR"] = self.metrics_addr(name)
        env["COFFER_LOG_FILE"] = str(self.log_dir / f"{name}.log")
        if self.replicas > 1 or name in self.instance_addrs:
            for other in SERVICES:
                key = f"COFFER_{other.upper()}_ADDR"
                if key in env:
                    env[key] = self.instance_addr(name) if other == service else self.targets_of(other)
            if "COFFER_AWS_ADDR" in env and self.settings.aws_addr:
                env["COFFER_AWS_ADDR"] = self.aws_addr_of(name)
            if "COFFER_CONSOLE_ADDR" in env and self.settings.console_addr:
                env["COFFER_CONSOLE_ADDR"] = self.console_addr_of(name)
        if service == "store" and self.settings.peers:
            env["COFFER_PEERS"] = peers_json(self._local_peers())
        return env

    def _peer_ca_name(self, peer: Peer) -> str:
        return f"peer-{peer.region}-ca.crt"

    def _local_peers(self) -> list[Peer]:
        store_dir = self.service_pki_dir("store")
        return [Peer(p.region, p.endpoint, store_dir / self._peer_ca_name(p)) for p in self.settings.peers]

    def install_service_pki(self, name: str) -> Path:
        """(Re)fill the service's PKI directory from the issuing one (the store's also gets its peers' CA
        certificates)."""
        extra = {self._peer_ca_name(p): p.ca_file for p in self.settings.peers} if name == "store" else {}
        return install_service_dir(
            self.settings.pki_dir,
            self.service_pki_dir(name),
            name,
            region=self.settings.region,
            extra=extra,
        )

    def aws_addr_of(self, name: str) -> str:
        """Where the gateway instance ``name`` serves the AWS protocol (``make run``: the first replica's
        port plus REPLICA_PORT_STEP per replica)."""
        return replica_addr(self.settings.aws_addr, replica_index(name))

    def console_addr_of(self, name: str) -> str:
        """Where the gateway instance ``name`` serves the web console (as :meth:`aws_addr_of`)."""
        return replica_addr(self.settings.console_addr, replica_index(name))

    def kill_service(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one service process and wait for it to exit (tests: crash a worker mid-step)."""
        sp = self.processes.pop(name)
        sp.signal(sig)
        return sp.reap(self.stop_timeout)

    def start_service(self, name: str) -> None:
        """(Re)start one service instance and wait until it is SERVING."""
        self._spawn(name)
        self.processes[name].wait_serving(self.settings.pki_dir, self.health_timeout)

    def _spawn(self, name: str) -> None:
        self.install_service_pki(service_of(name))
        self.processes[name] = ServiceProcess.spawn(
            name,
            service=service_of(name),
            python=self.python,
            env=self.service_env(name),
            address=self.instance_addr(name),
            log_dir=self.log_dir,
            run_dir=self.run_dir,
        )

    @property
    def admin(self) -> Credentials:
        """The admin's access key (``prepare`` makes or reuses it)."""
        if self.admin_credentials is None:
            self.admin_credentials = iam_keys.ensure_admin(self.profile_path)
        return self.admin_credentials

    @property
    def bootstrap_keys_file(self) -> Path:
        return self.home / iam_keys.BOOTSTRAP_FILE_NAME

    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        fd = os.open(self.home / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
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
        echo: Callable[[str], None] = options.pop("echo", print_line)
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
