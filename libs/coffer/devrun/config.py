"""What the ``make run`` supervisor hands to each service: COFFER_* settings, addresses, regions and peers.

Pure functions of :class:`~coffer.settings.Settings` and environment mappings: no files, no processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from coffer import redisconn
from coffer.client.credentials import Credentials
from coffer.core.targets import url_endpoint
from coffer.settings import SERVICES, Peer, Settings, instance_name
from coffer.settings import connect_address as connect_address
from coffer.settings import replica_index as replica_index
from coffer.settings import service_env as only_its_settings
from coffer.settings import service_of as service_of

#: Start order: each wave waits for the previous one to be SERVING. Stopping walks the waves backwards.
START_WAVES: tuple[tuple[str, ...], ...] = (("kms",), ("store",), ("gateway",), ("rotation",))
DATABASE_NAME = "coffer"
#: The database roles' passwords, under COFFER_HOME (``coffer.dbroles``).
DB_ROLES_FILE = "db-roles.json"
MAX_REGIONS = 9
#: ``make run REPLICAS=n``: replica ``k`` (0-based) of a service listens on the first replica's port plus
#: ``REPLICA_PORT_STEP * k`` (gateway 7443, 8443, 9443...; its AWS endpoint 7447, 8447...).
REPLICA_PORT_STEP = 1000
MAX_REPLICAS = 2
#: Where rotation may connect under ``make run`` unless COFFER_ROTATION_ALLOWED_TARGETS says otherwise: any
#: non-local address, plus the example rotation function's port on loopback (examples/rotation_function).
DEV_ALLOWED_TARGETS = "*,127.0.0.1:7600"
#: Where ``make run`` serves the gateway's AWS-protocol endpoint unless COFFER_AWS_ADDR says otherwise (an
#: empty COFFER_AWS_ADDR turns it off); region ``i`` adds ``10*i`` like the other ports.
DEV_AWS_ADDR = "127.0.0.1:7447"
#: Where ``make run`` serves the gateway's web console unless COFFER_CONSOLE_ADDR says otherwise (an empty
#: COFFER_CONSOLE_ADDR turns it off); region ``i`` adds ``10*i`` like the other ports.
DEV_CONSOLE_ADDR = "127.0.0.1:7448"
#: Settings that belong to one region's home and are never copied to another region.
_REGION_OWN = frozenset(
    {
        "COFFER_PKI_DIR",
        "COFFER_ROOT_KEY_FILE",
        "COFFER_LOG_FILE",
        "COFFER_ROTATION_ACCESS_KEY_ID",
        "COFFER_ROTATION_SECRET_ACCESS_KEY",
        "COFFER_BOOTSTRAP_KEYS_FILE",
        "COFFER_PEERS",
    }
)


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
        "COFFER_ROTATION_ALLOWED_TARGETS": settings.rotation_allowed_targets,
        "COFFER_OPERATOR_PRINCIPALS": ",".join(settings.operator_principals),
        "COFFER_SEAL": settings.seal,
        "COFFER_PKCS11_MODULE": settings.pkcs11_module,
        "COFFER_PKCS11_TOKEN_LABEL": settings.pkcs11_token_label,
        "COFFER_PKCS11_PIN_FILE": settings.pkcs11_pin_file,
        "COFFER_PKCS11_KEY_LABEL": settings.pkcs11_key_label,
        "COFFER_ROOT_ROTATION_BATCH": str(settings.root_rotation_batch),
    }
    if settings.pkcs11_pin:
        env["COFFER_PKCS11_PIN"] = settings.pkcs11_pin
    if settings.unsafe_bench_bypass:
        env["COFFER_UNSAFE_BENCH_BYPASS"] = "1"
    env["COFFER_THROTTLE"] = "on" if settings.throttle else "off"
    env["COFFER_THROTTLE_PRINCIPAL_SHARE"] = repr(settings.throttle_principal_share)
    env["COFFER_THROTTLE_BURST_SECONDS"] = repr(settings.throttle_burst_seconds)
    if settings.throttle_rates:
        env["COFFER_THROTTLE_RATES"] = json.dumps(dict(settings.throttle_rates))
    if settings.rotation_denied_targets:
        env["COFFER_ROTATION_DENIED_TARGETS"] = ",".join(settings.rotation_denied_targets)
    if settings.peers:
        env["COFFER_PEERS"] = peers_json(settings.peers)
    for service in SERVICES:
        env[f"COFFER_{service.upper()}_ADDR"] = settings.addr_of(service)
    env["COFFER_AWS_ADDR"] = settings.aws_addr
    env["COFFER_CONSOLE_ADDR"] = settings.console_addr
    return env


def with_aws_endpoint(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the AWS-protocol endpoint on :data:`DEV_AWS_ADDR` and the web console on
    :data:`DEV_CONSOLE_ADDR` unless it names its own (or none)."""
    out = dict(env)
    out.setdefault("COFFER_AWS_ADDR", DEV_AWS_ADDR)
    out.setdefault("COFFER_CONSOLE_ADDR", DEV_CONSOLE_ADDR)
    return out


def console_url(settings: Settings) -> str | None:
    """The web console's URL (None when it is off); the gateway's certificate names 127.0.0.1 and
    localhost, so the browser trusts it once the deployment's CA is trusted."""
    return f"https://{connect_address(settings.console_addr)}/" if settings.console_addr else None


def aws_endpoint_url(settings: Settings) -> str | None:
    """The URL clients reach the AWS-protocol endpoint at (None when it is off). The gateway's certificate
    names 127.0.0.1 and localhost (``coffer.pki``), so a loopback URL verifies."""
    return f"https://{connect_address(settings.aws_addr)}" if settings.aws_addr else None


def service_env(
    name: str,
    settings: Settings,
    *,
    base_env: Mapping[str, str],
    database_url: str,
    redis_url: str,
    log_dir: Path,
    rotation_credentials: Credentials | None,
    service_dsns: Mapping[str, str] | None = None,
    bootstrap_keys_file: Path | None = None,
) -> dict[str, str]:
    """The whole environment of the service process ``name`` (``python -m coffer.<name>``): ``base_env``
    plus the deployment's COFFER_* settings, the database (logged in as the service's own role, from
    ``service_dsns``) and Redis it actually runs on, the service's own log file, the rotation service's
    session credentials (for the rotation service only) and the bootstrap keys file (the store's); then
    filtered to the settings that service uses (``coffer.settings.service_env``)."""
    env = dict(base_env)
    env.update(settings_env(settings))
    env["COFFER_DATABASE_URL"] = database_url
    env["COFFER_REDIS_URL"] = redis_url
    env["COFFER_LOG_FILE"] = str(log_dir / f"{name}.log")
    env["PYTHONUNBUFFERED"] = "1"
    if not settings.peers:
        env.pop("COFFER_PEERS", None)
    if name == "rotation" and rotation_credentials is not None:
        env.update(
            {
                "COFFER_ROTATION_ACCESS_KEY_ID": rotation_credentials.access_key_id,
                "COFFER_ROTATION_SECRET_ACCESS_KEY": rotation_credentials.secret_access_key,
            }
        )
    if bootstrap_keys_file is not None:
        env["COFFER_BOOTSTRAP_KEYS_FILE"] = str(bootstrap_keys_file)
    if not settings.rotation_allowed_targets:
        env["COFFER_ROTATION_ALLOWED_TARGETS"] = DEV_ALLOWED_TARGETS
    env["COFFER_ROTATION_DENIED_TARGETS"] = ",".join(
        [
            *settings.rotation_denied_targets,
            *filter(None, [url_endpoint(database_url)]),
            *redisconn.endpoints(redis_url),
        ]
    )
    if service_dsns and name in service_dsns:
        env["COFFER_DATABASE_URL"] = service_dsns[name]
    return only_its_settings(name, env)


def replica_addr(addr: str, index: int) -> str:
    """Where replica ``index`` of a service listens under ``make run`` (its first replica on ``addr``)."""
    return _shift_port(addr, REPLICA_PORT_STEP * index) if index else addr


def instance_waves(replicas: int) -> tuple[tuple[str, ...], ...]:
    """:data:`START_WAVES` with every replica of each service: the replicas of a wave start together."""
    return tuple(
        tuple(instance_name(service, index) for service in wave for index in range(replicas))
        for wave in START_WAVES
    )


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
        env = {k: v for k, v in first.items() if k not in _REGION_OWN}
        env["COFFER_HOME"] = str(settings.home / "regions" / region)
        env["COFFER_REGION"] = region
        for service in SERVICES:
            env[f"COFFER_{service.upper()}_ADDR"] = _shift_port(settings.addr_of(service), 10 * index)
        if settings.aws_addr:
            env["COFFER_AWS_ADDR"] = _shift_port(settings.aws_addr, 10 * index)
        if settings.console_addr:
            env["COFFER_CONSOLE_ADDR"] = _shift_port(settings.console_addr, 10 * index)
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
            Peer(other.region, connect_address(other.store_addr), other.pki_dir / "ca.crt")
            for other in settings
            if other.region != own.region
        ]
        out.append({**env, "COFFER_PEERS": peers_json(peers)})
    return out


def with_database(url: str, database: str) -> str:
    """``url`` (a PostgreSQL URL) pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
