"""``coffer status``: ask every service of the profile for its health (standard gRPC health service).

The gateway is checked like a client reaches it (TLS verified against the CA, no client certificate); the
internal services with the operator's client certificate (mTLS), which every service lets check its health.

Under ``make run`` the profile names the supervisor's state file (``supervisor_state``, in each region's
entry): each service's restarts are read from it and shown (``restarts N``); without one (no supervisor, or
it has stopped) nothing is shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer.client import _ops
from coffer.rpc.tls import service_host
from coffer.settings import replica_index, service_of

GATEWAY = "gateway"
ORDER = ("gateway", "store", "kms", "rotation")


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    name: str
    address: str
    status: str  # SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, or UNREACHABLE
    detail: str = ""
    #: Restarts by the ``make run`` supervisor (``None``: no supervisor state to read).
    restarts: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "SERVING"


def _credentials(
    name: str, ca_file: Path, operator_cert: Path | None, operator_key: Path | None
) -> grpc.ChannelCredentials:
    ca = ca_file.read_bytes()
    if name == GATEWAY or operator_cert is None or operator_key is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=operator_key.read_bytes(),
        certificate_chain=operator_cert.read_bytes(),
    )


def check_one(
    name: str,
    address: str,
    *,
    ca_file: Path,
    operator_cert: Path | None,
    operator_key: Path | None,
    timeout: float,
) -> ServiceHealth:
    try:
        creds = _credentials(service_of(name), ca_file, operator_cert, operator_key)
    except OSError as exc:
        return ServiceHealth(name, address, "UNREACHABLE", f"cannot read TLS files: {exc}")
    # Every service is checked under its own name (``<name>.coffer.internal``), whatever its address.
    options = _ops.channel_options(service_host(service_of(name)))
    with grpc.secure_channel(_ops.target_of(address), creds, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            return ServiceHealth(name, address, "UNREACHABLE", f"{getattr(code, 'name', code)}: {details}")
    return ServiceHealth(name, address, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def check_all(
    services: Mapping[str, str],
    *,
    ca_file: Path,
    operator_cert: Path | None,
    operator_key: Path | None,
    timeout: float = 3.0,
    restarts: Mapping[str, int] | None = None,
) -> list[ServiceHealth]:
    def order(name: str) -> tuple[int, int, str]:  # replicas (``store-2``) right after their first
        service = service_of(name)
        return (ORDER.index(service) if service in ORDER else len(ORDER), replica_index(name), name)

    names = sorted(services, key=order)
    results = [
        check_one(
            name,
            services[name],
            ca_file=ca_file,
            operator_cert=operator_cert,
            operator_key=operator_key,
            timeout=timeout,
        )
        for name in names
    ]
    if restarts is None:
        return results
    return [replace(r, restarts=restarts.get(r.name, 0)) for r in results]


def read_restarts(state_file: Path) -> dict[str, int] | None:
    """Each service's restarts from the supervisor's state file; ``None`` when there is none (no supervisor
    runs) or it cannot be read as one."""
    try:
        doc = json.loads(state_file.read_text(encoding="utf-8"))
        return {str(name): int(entry["restarts"]) for name, entry in doc["services"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def supervisor_restarts(profile_path: Path | None, region: str | None) -> dict[str, int] | None:
    """The restarts the ``make run`` supervisor recorded for ``region`` (the state file the profile names in
    that region's entry, else at its top level); ``None`` when the profile names none or it is not there."""
    if profile_path is None:
        return None
    try:
        doc = json.loads(profile_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    entry = doc
    regions = doc.get("regions")
    if region and isinstance(regions, dict) and isinstance(regions.get(region), dict):
        entry = regions[region]
    elif region and doc.get("region") not in (None, region):
        return None
    path = entry.get("supervisor_state")
    if not isinstance(path, str) or not path:
        return None
    state_file = Path(path).expanduser()
    return read_restarts(state_file if state_file.is_absolute() else profile_path.parent / state_file)
