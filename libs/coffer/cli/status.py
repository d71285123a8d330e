"""``coffer status``: ask every service of the profile for its health (standard gRPC health service).

The gateway is checked like a client reaches it (TLS verified against the CA, no client certificate); the
internal services with the operator's client certificate (mTLS), which every service lets check its health.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer.client import _ops
from coffer.rpc.tls import service_host

GATEWAY = "gateway"
ORDER = ("gateway", "store", "kms", "rotation")


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    name: str
    address: str
    status: str  # SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, or UNREACHABLE
    detail: str = ""

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
        creds = _credentials(name, ca_file, operator_cert, operator_key)
    except OSError as exc:
        return ServiceHealth(name, address, "UNREACHABLE", f"cannot read TLS files: {exc}")
    # Every service is checked under its own name (``<name>.coffer.internal``), whatever its address.
    options = _ops.channel_options(service_host(name))
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
) -> list[ServiceHealth]:
    names = sorted(services, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [
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
