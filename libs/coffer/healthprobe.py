"""``python -m coffer.healthprobe [HOST:PORT]``: exit 0 when the service's plaintext health port
(``COFFER_HEALTH_ADDR``, the default address; a wildcard host means this machine) answers SERVING, 1
otherwise. The container image's HEALTHCHECK and the Compose file use it; Kubernetes asks the same port with
its own ``grpc`` probe."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer.settings import connect_address


def probe(address: str, *, timeout: float = 2.0) -> str:
    """The overall health status name at ``address`` (``SERVING``...) or ``UNAVAILABLE: <why>``."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return f"{getattr(code, 'name', 'UNKNOWN')}: {exc.details() if hasattr(exc, 'details') else exc}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    address = args[0] if args else os.environ.get("COFFER_HEALTH_ADDR", "")
    if not address:
        print("healthprobe: give HOST:PORT or set COFFER_HEALTH_ADDR", file=sys.stderr)
        return 2
    status = probe(connect_address(address))
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
