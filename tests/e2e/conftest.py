"""End-to-end fixtures: whole deployments (kms, store, gateway, rotation as OS processes) built by the same
``coffer.devrun.Deployment`` that ``make run`` uses, on the harness's PostgreSQL (a fresh database each) and
Redis, in a temporary COFFER_HOME with free ports. Tests talk to them only as a user would: the ``coffer``
command and the health service. ``e2e_regions_factory`` builds several such deployments as regions
``local-1``, ``local-2``... peers of each other (``coffer.devrun.MultiRegion``, as ``make run REGIONS=2``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from coffer.client.credentials import Credentials
from coffer.devrun import Deployment, MultiRegion, region_name, tail
from coffer.devrun.config import aws_endpoint_url, console_url
from coffer.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from coffer.settings import SERVICES, Settings

#: The AWS CLI's exit code for a service error (the ``coffer`` command follows it).
CLI_SERVICE_ERROR = 254


def coffer_command() -> list[str]:
    """The installed ``coffer`` console script next to this interpreter, else the module run directly."""
    script = Path(sys.executable).parent / "coffer"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from coffer.cli.main import main; sys.exit(main())"]


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def e2e_env(home: Path, *, database_url: str, redis_url: str) -> dict[str, str]:
    """COFFER_* settings of a test deployment: its own home, database and free ports; purge checks every
    second so deleted secrets go away while the test watches."""
    env = {
        "COFFER_HOME": str(home),
        "COFFER_DATABASE_URL": database_url,
        "COFFER_REDIS_URL": redis_url,
        "COFFER_PURGE_INTERVAL_SECONDS": "1",
        "COFFER_LOG_LEVEL": "info",
        # Deployments share the harness's Redis: each keeps its rotation jobs under its own keys.
        "COFFER_ROTATION_STREAM_PREFIX": f"coffer:rotation:{home.name}",
        # No request rates: tests write and poll far faster than AWS's 50/s quotas (the throttling tests
        # run through coffer.testing.stack with their own low rates).
        "COFFER_THROTTLE": "off",
    }
    for service in SERVICES:
        env[f"COFFER_{service.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
    # the gateway's AWS-protocol endpoint (boto3, the AWS CLI)
    env["COFFER_AWS_ADDR"] = f"127.0.0.1:{free_port()}"
    # the gateway's web console (browser tests)
    env["COFFER_CONSOLE_ADDR"] = f"127.0.0.1:{free_port()}"
    return env


@dataclass
class E2E:
    """A running deployment, seen from outside."""

    deployment: Deployment
    database_url: str
    pg_data_dir: Path
    redis_data_dir: Path

    @property
    def settings(self) -> Settings:
        return self.deployment.settings

    @property
    def endpoint(self) -> str:
        return self.deployment.endpoint

    @property
    def ca_file(self) -> Path:
        return self.deployment.ca_file

    @property
    def aws_endpoint_url(self) -> str:
        """``https://127.0.0.1:<port>``: the gateway's AWS-protocol endpoint (boto3's ``endpoint_url``)."""
        url = aws_endpoint_url(self.deployment.settings)
        assert url is not None, "the e2e deployments serve the AWS endpoint (COFFER_AWS_ADDR)"
        return url

    @property
    def console_url(self) -> str:
        """``https://127.0.0.1:<port>/``: the gateway's web console."""
        url = console_url(self.deployment.settings)
        assert url is not None, "the e2e deployments serve the web console (COFFER_CONSOLE_ADDR)"
        return url

    @property
    def admin_credentials(self) -> Credentials:
        return self.deployment.admin

    @property
    def home(self) -> Path:
        return self.deployment.home

    @property
    def log_dir(self) -> Path:
        return self.deployment.log_dir

    @property
    def profile_path(self) -> Path:
        return self.deployment.profile_path

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run_cli(self.profile_path, *args, timeout=timeout)

    def cli_json(self, *args: str) -> Any:
        """Run a command that must succeed and return its JSON output."""
        result = self.cli(*args)
        if result.returncode != 0:
            raise cli_failure(args, result, [self.log_dir])
        return json.loads(result.stdout) if result.stdout.strip() else {}


def cli_failure(
    args: Sequence[str], result: subprocess.CompletedProcess[str], log_dirs: Sequence[Path]
) -> AssertionError:
    """A failed command, with the tails of the deployment's gateway, store and kms logs (to tell why)."""
    tails = "\n".join(
        f"--- {log_dir / name}.log (tail)\n" + "\n".join(tail(log_dir / f"{name}.log"))
        for log_dir in log_dirs
        for name in ("gateway", "store", "kms")
    )
    return AssertionError(f"coffer {' '.join(args)} failed ({result.returncode}): {result.stderr}\n{tails}")


def cli_env(profile: Path) -> dict[str, str]:
    """The environment of a user whose only configuration is the deployment's profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env["COFFER_PROFILE"] = str(profile)
    return env


def run_cli(profile: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*coffer_command(), *args],
        env=cli_env(profile),
        cwd=profile.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def new_database(pg_server: EmbeddedPostgres) -> str:
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(pg_server.url(), name))
    return pg_server.url(name)


@pytest.fixture(scope="session")
def e2e_factory(
    pg_server: EmbeddedPostgres, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., E2E]]:
    """Builds and starts deployments (each with a fresh database and home); stops all of them at the end."""
    started: list[E2E] = []

    def build(**settings: str) -> E2E:
        """``settings``: COFFER_* values over the defaults (e.g. ``COFFER_SEAL="shamir"``)."""
        home = tmp_path_factory.mktemp("coffer-home")
        database_url = new_database(pg_server)
        env = {**e2e_env(home, database_url=database_url, redis_url=redis_server.url()), **settings}
        lines: list[str] = []
        deployment = Deployment(Settings.from_env(env), echo=lines.append, health_timeout=60.0)
        started_at = time.monotonic()
        deployment.start()
        lines.append(f"started in {time.monotonic() - started_at:.1f}s")
        e2e = E2E(
            deployment=deployment,
            database_url=database_url,
            pg_data_dir=pg_server.data_dir,
            redis_data_dir=redis_server.data_dir,
        )
        started.append(e2e)
        return e2e

    yield build
    for e2e in started:
        e2e.deployment.stop()


@dataclass
class E2ERegions:
    """Several running regions (``local-1`` first), and the profile that lists all of them."""

    multi: MultiRegion
    regions: dict[str, E2E]

    @property
    def profile_path(self) -> Path:
        return self.multi.profile_path

    def __getitem__(self, region: str) -> E2E:
        return self.regions[region]

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``coffer <args>`` with the multi-region profile (pass ``--region`` among ``args``)."""
        return run_cli(self.profile_path, *args, timeout=timeout)

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args)
        if result.returncode != 0:
            raise cli_failure(args, result, [r.log_dir for r in self.regions.values()])
        return json.loads(result.stdout) if result.stdout.strip() else {}


@pytest.fixture(scope="session")
def e2e_regions_factory(
    pg_server: EmbeddedPostgres, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[int], E2ERegions]]:
    """Builds and starts ``count`` regions (each a deployment with its own home, PKI, database and ports,
    all on the harness's servers), configured as each other's peers; stops all of them at the end."""
    started: list[MultiRegion] = []

    def build(count: int = 2) -> E2ERegions:
        envs, databases = [], []
        for index in range(count):
            region = region_name(index)
            home = tmp_path_factory.mktemp(f"coffer-{region}")
            database_url = new_database(pg_server)
            env = e2e_env(home, database_url=database_url, redis_url=redis_server.url())
            env["COFFER_REGION"] = region
            env["COFFER_REPLICATION_INTERVAL_SECONDS"] = "0.5"
            envs.append(env)
            databases.append(database_url)
        lines: list[str] = []
        multi = MultiRegion.from_envs(envs, echo=lines.append, health_timeout=60.0)
        started.append(multi)
        multi.start()
        regions = {
            deployment.settings.region: E2E(
                deployment=deployment,
                database_url=database_url,
                pg_data_dir=pg_server.data_dir,
                redis_data_dir=redis_server.data_dir,
            )
            for deployment, database_url in zip(multi.deployments, databases, strict=True)
        }
        return E2ERegions(multi=multi, regions=regions)

    yield build
    for multi in started:
        multi.stop()


@pytest.fixture(scope="session")
def e2e(e2e_factory: Callable[..., E2E]) -> E2E:
    """One deployment shared by the end-to-end tests that do not stop or break it."""
    return e2e_factory()


@dataclass(frozen=True)
class Tools:
    """Helpers for tests that run their own supervisor (test modules cannot import this conftest)."""

    pg_server: EmbeddedPostgres
    redis_server: EmbeddedRedis
    service_error_exit: int = CLI_SERVICE_ERROR

    def new_database(self) -> str:
        return new_database(self.pg_server)

    def env_for(self, home: Path, *, database_url: str) -> dict[str, str]:
        return e2e_env(home, database_url=database_url, redis_url=self.redis_server.url())

    def cli(self, profile: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run_cli(profile, *args, timeout=timeout)


@pytest.fixture(scope="session")
def e2e_tools(pg_server: EmbeddedPostgres, redis_server: EmbeddedRedis) -> Tools:
    return Tools(pg_server=pg_server, redis_server=redis_server)
