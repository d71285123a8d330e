"""Frozen settings, read from COFFER_* environment variables once, in each service's ``__main__``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from coffer.core.throttle import parse_rates

#: The role the rotation service assumes (created by the store's IAM bootstrap).
DEFAULT_ROTATION_ROLE_ARN = "arn:aws:iam::000000000000:role/coffer-rotation"


def _session_seconds(value: str) -> int:
    """COFFER_ROTATION_SESSION_SECONDS: 900 to 43200 (AWS STS's bounds of DurationSeconds)."""
    seconds = int(value)
    if not 900 <= seconds <= 43200:
        raise ValueError(f"COFFER_ROTATION_SESSION_SECONDS must be between 900 and 43200, got {seconds}")
    return seconds


SERVICES = ("gateway", "kms", "store", "rotation")

DEFAULT_PORTS = {"gateway": 7443, "store": 7444, "kms": 7445, "rotation": 7446}


#: The COFFER_* variables every service reads (where it is, who it is, where the others are, how to log).
COMMON_KEYS = frozenset(
    {
        "COFFER_HOME",
        "COFFER_REGION",
        "COFFER_ACCOUNT_ID",
        "COFFER_PARTITION",
        "COFFER_PKI_DIR",
        "COFFER_LOG_LEVEL",
        "COFFER_LOG_FILE",
        "COFFER_HEALTH_ADDR",
        "COFFER_METRICS_ADDR",
        *(f"COFFER_{service.upper()}_ADDR" for service in SERVICES),
    }
)
#: The other COFFER_* variables each service reads. A process is given these and COMMON_KEYS only: the gateway
#: no database URL and no Redis URL, the rotation service no database URL, the kms no Redis URL.
SERVICE_KEYS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset(
        {
            "COFFER_OPERATOR_PRINCIPALS",
            "COFFER_UNSAFE_BENCH_BYPASS",
            "COFFER_THROTTLE",
            "COFFER_THROTTLE_RATES",
            "COFFER_THROTTLE_PRINCIPAL_SHARE",
            "COFFER_THROTTLE_BURST_SECONDS",
            "COFFER_AWS_ADDR",
            "COFFER_CONSOLE_ADDR",
        }
    ),
    "kms": frozenset(
        {
            "COFFER_DATABASE_URL",
            "COFFER_ROOT_KEY_FILE",
            "COFFER_PURGE_INTERVAL_SECONDS",
            "COFFER_SEAL",
            "COFFER_PKCS11_MODULE",
            "COFFER_PKCS11_TOKEN_LABEL",
            "COFFER_PKCS11_PIN",
            "COFFER_PKCS11_PIN_FILE",
            "COFFER_PKCS11_KEY_LABEL",
            "COFFER_ROOT_ROTATION_BATCH",
            "COFFER_ROOT_ROTATION_STOP_AFTER",
            "COFFER_UNSAFE_BENCH_BYPASS",
        }
    ),
    "store": frozenset(
        {
            "COFFER_DATABASE_URL",
            "COFFER_DATA_KEY_CACHE_SECONDS",
            "COFFER_PURGE_INTERVAL_SECONDS",
            "COFFER_ROTATION_MAX_TRIES",
            "COFFER_ROTATION_BACKOFF_BASE_SECONDS",
            "COFFER_ROTATION_LEASE_SECONDS",
            "COFFER_PEERS",
            "COFFER_REPLICATION_INTERVAL_SECONDS",
            "COFFER_OUTBOX_MAX_ROWS",
            "COFFER_OUTBOX_KEEP_SECONDS",
            "COFFER_ROTATION_ATTEMPTS_KEPT",
            "COFFER_ROTATION_ALLOWED_TARGETS",
            "COFFER_ROTATION_DENIED_TARGETS",
            "COFFER_BOOTSTRAP_KEYS_FILE",
            "COFFER_UNSAFE_BENCH_BYPASS",
            "COFFER_WATCH_KEEP_SECONDS",
            "COFFER_WATCH_MAX_EVENTS",
            "COFFER_WATCH_HEARTBEAT_SECONDS",
            "COFFER_WATCH_POLL_SECONDS",
        }
    ),
    "rotation": frozenset(
        {
            "COFFER_REDIS_URL",
            "COFFER_ROTATION_ACCESS_KEY_ID",
            "COFFER_ROTATION_SECRET_ACCESS_KEY",
            "COFFER_ROTATION_CREDENTIALS_FILE",
            "COFFER_ROTATION_ROLE_ARN",
            "COFFER_ROTATION_SESSION_SECONDS",
            "COFFER_ROTATION_POLL_SECONDS",
            "COFFER_ROTATION_LEASE_SECONDS",
            "COFFER_ROTATION_WORKERS",
            "COFFER_ROTATION_STREAM_PREFIX",
            "COFFER_ROTATION_ALLOWED_TARGETS",
            "COFFER_ROTATION_DENIED_TARGETS",
        }
    ),
}


def service_env(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` as one service's process may see it: every variable that is not COFFER_*, and of the COFFER_*
    ones only those the service reads (COMMON_KEYS and ``SERVICE_KEYS[service]``)."""
    allowed = COMMON_KEYS | SERVICE_KEYS[service]
    return {k: v for k, v in env.items() if not k.startswith("COFFER_") or k in allowed}


@dataclass(frozen=True, slots=True)
class Peer:
    """Another region's deployment this one replicates with: its store endpoint and its CA certificate."""

    region: str
    endpoint: str
    ca_file: Path


def parse_peers(raw: str) -> tuple[Peer, ...]:
    """``COFFER_PEERS``: a JSON list of ``{"region": .., "endpoint": "host:port", "ca_file": path}``."""
    if not raw.strip():
        return ()
    items = json.loads(raw)
    if not isinstance(items, list):
        raise ValueError("COFFER_PEERS must be a JSON list of {region, endpoint, ca_file} objects")
    peers: list[Peer] = []
    for item in items:
        if not isinstance(item, dict) or not {"region", "endpoint", "ca_file"} <= set(item):
            raise ValueError(f"COFFER_PEERS entry needs region, endpoint and ca_file: {item!r}")
        peers.append(
            Peer(region=str(item["region"]), endpoint=str(item["endpoint"]), ca_file=Path(item["ca_file"]))
        )
    return tuple(peers)


def split_address(addr: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:443``) → (host, port) for binding a listener; an empty host: all interfaces."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"an address must be host:port, not {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def instance_name(service: str, index: int) -> str:
    """The name of replica ``index`` (0-based) of ``service``: the service's own name for the first, then
    ``<service>-2``, ``<service>-3``... (its process, pid file, log files and supervisor entry)."""
    return service if index == 0 else f"{service}-{index + 1}"


def service_of(instance: str) -> str:
    """The service an instance name (:func:`instance_name`) is a replica of."""
    base, sep, number = instance.rpartition("-")
    return base if sep and number.isdigit() and base in SERVICES else instance


def replica_index(instance: str) -> int:
    """The 0-based replica index of an instance name (:func:`instance_name`)."""
    base, sep, number = instance.rpartition("-")
    return int(number) - 1 if sep and number.isdigit() and base in SERVICES else 0


def connect_address(addr: str) -> str:
    """Where a client on this machine reaches a server bound to ``addr`` (a wildcard host: loopback)."""
    host, _, port = addr.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def _on_off(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("on", "1", "true", "yes"):
        return True
    if v in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, not {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    region: str
    account_id: str
    partition: str
    database_url: str
    redis_url: str
    gateway_addr: str
    store_addr: str
    kms_addr: str
    rotation_addr: str
    pki_dir: Path
    root_key_file: Path
    log_level: str
    log_file: Path | None
    data_key_cache_seconds: float
    #: ``COFFER_UNSAFE_BENCH_BYPASS=1``: decide no policy and record no audit event (gateway, store, kms).
    #: Only ``make bench`` sets it, to measure what policies and auditing cost; never in a deployment.
    unsafe_bench_bypass: bool
    purge_interval_seconds: float
    # Rotation (issue 3). The rotation service's long-term access key (IAM user coffer-rotation), with which
    # it assumes role coffer-rotation through the gateway for sessions of rotation_session_seconds.
    rotation_access_key_id: str = ""
    rotation_secret_access_key: str = ""
    #: Or a 0600 JSON file {access_key_id, secret_access_key} (container deployments).
    rotation_credentials_file: Path | None = None
    rotation_role_arn: str = DEFAULT_ROTATION_ROLE_ARN
    rotation_session_seconds: int = 3600
    #: The store: a 0600 JSON file of access keys to insert at start when absent
    #: (``coffer.store.iam_bootstrap``).
    bootstrap_keys_file: Path | None = None
    rotation_max_tries: int = 5
    rotation_backoff_base_seconds: float = 2.0
    rotation_lease_seconds: float = 60.0
    rotation_poll_seconds: float = 5.0
    rotation_workers: int = 4
    #: Redis key prefix of the rotation streams (``<prefix>:jobs``, ``<prefix>:dead``): deployments that
    #: share one Redis keep their jobs apart by giving each its own prefix.
    rotation_stream_prefix: str = "coffer:rotation"
    # Replication (issue 4): the peer regions' stores, and the replicator's poll interval (it also wakes on
    # the store's change notifications).
    peers: tuple[Peer, ...] = ()
    replication_interval_seconds: float = 1.0
    # Housekeeping (issue 8): the outbox keeps at most this many rows (the oldest are dropped beyond it, and
    # replicas that missed some are re-seeded); acknowledged rows are kept this long; finished rotation
    # attempts kept per secret.
    outbox_max_rows: int = 100_000
    outbox_keep_seconds: float = 600.0
    rotation_attempts_kept: int = 100
    # The change stream (issue 14, WatchSecrets): events are kept this long and at most this many (a resume
    # token older than what is kept is refused: the client resyncs); an idle stream sends a Heartbeat this
    # often, and reads the log this often even without a notification.
    watch_keep_seconds: float = 86_400.0
    watch_max_events: int = 1_000_000
    watch_heartbeat_seconds: float = 15.0
    watch_poll_seconds: float = 5.0
    #: Where rotation may connect (database targets, rotation functions): ``coffer.core.targets`` parses it.
    #: Empty means ``*`` (any address except loopback, link-local and the like, and Coffer's own endpoints).
    rotation_allowed_targets: str = ""
    #: More of Coffer's own ``host:port`` endpoints rotation must never reach, comma-separated: the ones a
    #: process does not otherwise know (the rotation service is not given the database's URL).
    rotation_denied_targets: tuple[str, ...] = ()
    #: The principals allowed operator-only actions (RegisterRotationFunction, ...) and shown the detail of
    #: rotation failures.
    operator_principals: tuple[str, ...] = ("user/admin", "arn:aws:iam::000000000000:user/admin")
    #: Where the service also serves the gRPC health service alone, in plaintext (``host:port``), for probes
    #: that cannot speak TLS (the kubelet's gRPC probe); empty: nowhere (``make run``).
    health_addr: str = ""
    #: Where the service serves its Prometheus metrics (``host:port``; "" = not served).
    metrics_addr: str = ""
    #: Where the gateway serves AWS's own protocols over HTTPS (``host:port``; issue 10,
    #: ``coffer.gateway.aws``): AWS JSON 1.1 for Secrets Manager and KMS, STS's query protocol, SigV4. Empty:
    #: not served.
    aws_addr: str = ""
    #: Where the gateway serves the web console over HTTPS (``host:port``; issue 15,
    #: ``coffer.gateway.console``). Empty: not served.
    console_addr: str = ""
    #: Request rates (issue 13, read by the gateway): ``COFFER_THROTTLE=off`` disables them; the rates are
    #: AWS's quotas per account (``coffer.core.throttle``) with ``throttle_rates`` (action → requests per
    #: second) over them; a principal may use ``throttle_principal_share`` of its account's rate; buckets hold
    #: ``throttle_burst_seconds`` of their rate.
    throttle: bool = True
    throttle_rates: tuple[tuple[str, float], ...] = ()
    throttle_principal_share: float = 0.5
    throttle_burst_seconds: float = 1.0
    #: How the kms holds its root key (issue 12): "file" (the root key file), "shamir" (stored encrypted
    #: under an unseal key given back as shares; the kms starts sealed) or "pkcs11" (a non-extractable AES key
    #: in an HSM token). Read by the kms only.
    seal: str = "file"
    #: The PKCS#11 module, token, PIN (or a file holding it) and key label of the pkcs11 seal (and of a
    #: ``migrate-seal --to pkcs11``). The key is generated in the token on first start when absent.
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token_label: str = ""
    pkcs11_pin: str = field(default="", repr=False)
    pkcs11_pin_file: str = ""
    pkcs11_key_label: str = "coffer-root"
    #: Key-material rows rewrapped per transaction by ``coffer operator rotate-root`` / ``migrate-seal``.
    root_rotation_batch: int = 50
    #: Testing and drills only: a rotation stops (and waits) after this many batches; 0 never stops.
    root_rotation_stop_after: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        home = Path(e.get("COFFER_HOME", ".coffer")).resolve()

        def addr(service: str) -> str:
            return e.get(f"COFFER_{service.upper()}_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")

        log_file = e.get("COFFER_LOG_FILE")
        return cls(
            home=home,
            region=e.get("COFFER_REGION", "local-1"),
            account_id=e.get("COFFER_ACCOUNT_ID", "000000000000"),
            partition=e.get("COFFER_PARTITION", "aws"),
            database_url=e.get("COFFER_DATABASE_URL", ""),
            redis_url=e.get("COFFER_REDIS_URL", ""),
            gateway_addr=addr("gateway"),
            store_addr=addr("store"),
            kms_addr=addr("kms"),
            rotation_addr=addr("rotation"),
            pki_dir=Path(e.get("COFFER_PKI_DIR", str(home / "pki"))),
            root_key_file=Path(e.get("COFFER_ROOT_KEY_FILE", str(home / "keys" / "root.key"))),
            log_level=e.get("COFFER_LOG_LEVEL", "info"),
            log_file=Path(log_file) if log_file else None,
            data_key_cache_seconds=float(e.get("COFFER_DATA_KEY_CACHE_SECONDS", "30")),
            unsafe_bench_bypass=e.get("COFFER_UNSAFE_BENCH_BYPASS", "") == "1",
            purge_interval_seconds=float(e.get("COFFER_PURGE_INTERVAL_SECONDS", "60")),
            rotation_access_key_id=e.get("COFFER_ROTATION_ACCESS_KEY_ID", ""),
            rotation_secret_access_key=e.get("COFFER_ROTATION_SECRET_ACCESS_KEY", ""),
            rotation_credentials_file=(
                Path(e["COFFER_ROTATION_CREDENTIALS_FILE"])
                if e.get("COFFER_ROTATION_CREDENTIALS_FILE")
                else None
            ),
            rotation_role_arn=e.get("COFFER_ROTATION_ROLE_ARN") or DEFAULT_ROTATION_ROLE_ARN,
            rotation_session_seconds=_session_seconds(e.get("COFFER_ROTATION_SESSION_SECONDS", "3600")),
            bootstrap_keys_file=Path(e["COFFER_BOOTSTRAP_KEYS_FILE"])
            if e.get("COFFER_BOOTSTRAP_KEYS_FILE")
            else None,
            rotation_max_tries=int(e.get("COFFER_ROTATION_MAX_TRIES", "5")),
            rotation_backoff_base_seconds=float(e.get("COFFER_ROTATION_BACKOFF_BASE_SECONDS", "2.0")),
            rotation_lease_seconds=float(e.get("COFFER_ROTATION_LEASE_SECONDS", "60")),
            rotation_poll_seconds=float(e.get("COFFER_ROTATION_POLL_SECONDS", "5")),
            rotation_workers=int(e.get("COFFER_ROTATION_WORKERS", "4")),
            rotation_stream_prefix=e.get("COFFER_ROTATION_STREAM_PREFIX", "coffer:rotation"),
            peers=parse_peers(e.get("COFFER_PEERS", "")),
            replication_interval_seconds=float(e.get("COFFER_REPLICATION_INTERVAL_SECONDS", "1.0")),
            outbox_max_rows=int(e.get("COFFER_OUTBOX_MAX_ROWS", "100000")),
            outbox_keep_seconds=float(e.get("COFFER_OUTBOX_KEEP_SECONDS", "600")),
            rotation_attempts_kept=int(e.get("COFFER_ROTATION_ATTEMPTS_KEPT", "100")),
            watch_keep_seconds=float(e.get("COFFER_WATCH_KEEP_SECONDS", "86400")),
            watch_max_events=int(e.get("COFFER_WATCH_MAX_EVENTS", "1000000")),
            watch_heartbeat_seconds=float(e.get("COFFER_WATCH_HEARTBEAT_SECONDS", "15")),
            watch_poll_seconds=float(e.get("COFFER_WATCH_POLL_SECONDS", "5")),
            rotation_allowed_targets=e.get("COFFER_ROTATION_ALLOWED_TARGETS", ""),
            rotation_denied_targets=tuple(
                t.strip() for t in e.get("COFFER_ROTATION_DENIED_TARGETS", "").split(",") if t.strip()
            ),
            seal=e.get("COFFER_SEAL", "file"),
            pkcs11_module=e.get("COFFER_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"),
            pkcs11_token_label=e.get("COFFER_PKCS11_TOKEN_LABEL", ""),
            pkcs11_pin=e.get("COFFER_PKCS11_PIN", ""),
            pkcs11_pin_file=e.get("COFFER_PKCS11_PIN_FILE", ""),
            pkcs11_key_label=e.get("COFFER_PKCS11_KEY_LABEL", "coffer-root"),
            root_rotation_batch=int(e.get("COFFER_ROOT_ROTATION_BATCH", "50")),
            root_rotation_stop_after=int(e.get("COFFER_ROOT_ROTATION_STOP_AFTER", "0")),
            operator_principals=tuple(
                p.strip()
                for p in e.get(
                    "COFFER_OPERATOR_PRINCIPALS", "user/admin,arn:aws:iam::000000000000:user/admin"
                ).split(",")
                if p.strip()
            ),
            health_addr=e.get("COFFER_HEALTH_ADDR", ""),
            metrics_addr=e.get("COFFER_METRICS_ADDR", ""),
            aws_addr=e.get("COFFER_AWS_ADDR", ""),
            console_addr=e.get("COFFER_CONSOLE_ADDR", ""),
            throttle=_on_off("COFFER_THROTTLE", e.get("COFFER_THROTTLE", "on")),
            throttle_rates=tuple(parse_rates(e.get("COFFER_THROTTLE_RATES", "")).items()),
            throttle_principal_share=float(e.get("COFFER_THROTTLE_PRINCIPAL_SHARE", "0.5")),
            throttle_burst_seconds=float(e.get("COFFER_THROTTLE_BURST_SECONDS", "1.0")),
        )

    def addr_of(self, service: str) -> str:
        return {
            "gateway": self.gateway_addr,
            "store": self.store_addr,
            "kms": self.kms_addr,
            "rotation": self.rotation_addr,
        }[service]
