"""TLS material and gRPC credentials. Every service has its own certificate signed by the deployment CA; the
certificate's common name is the service identity that peers authorize, and its only DNS name is the service's
name (``<identity>.coffer.internal``), which every client verifies: services are usually reached by IP:port,
so clients set that name explicitly (``grpc.ssl_target_name_override``) instead of trusting the address."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

#: The DNS domain of Coffer's service names; a deployment may put these names in its DNS, clients verify them
#: either way.
SERVICE_DOMAIN = "coffer.internal"


def service_host(identity: str) -> str:
    """The DNS name in the certificate of the Coffer service ``identity`` (``gateway`` ->
    ``gateway.coffer.internal``): the name a client of that service verifies."""
    return f"{identity}.{SERVICE_DOMAIN}"


#: The name the SDK and the CLI verify on the public port unless told another.
GATEWAY_HOST = service_host("gateway")


def name_options(server_name: str) -> list[tuple[str, str]]:
    """Channel options that make TLS verify ``server_name`` (whatever address the channel dials)."""
    return [("grpc.ssl_target_name_override", server_name), ("grpc.default_authority", server_name)]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def for_identity(cls, pki_dir: Path, identity: str) -> TlsFiles:
        """The CA plus ``<identity>.crt`` and ``<identity>.key`` (the ``coffer.pki`` layout)."""
        return cls(ca=pki_dir / "ca.crt", cert=pki_dir / f"{identity}.crt", key=pki_dir / f"{identity}.key")

    def _pair(self) -> tuple[bytes, bytes]:
        if self.cert is None or self.key is None:
            raise ValueError("this TLS configuration has no certificate/key pair")
        return self.key.read_bytes(), self.cert.read_bytes()


def server_credentials(
    files: TlsFiles, *, require_client_cert: bool, extra_client_cas: Sequence[Path] = ()
) -> grpc.ServerCredentials:
    """grpc's defaults already allow only TLS 1.2+ with ECDHE AEAD suites (and TLS 1.3). Client
    certificates are verified against our CA plus ``extra_client_cas`` (other regions' CAs, concatenated
    into one bundle); which identity each CA may vouch for is the server interceptor's check."""
    key, cert = files._pair()
    roots = b"\n".join([files.ca.read_bytes(), *(p.read_bytes() for p in dict.fromkeys(extra_client_cas))])
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=roots if require_client_cert else None,
        require_client_auth=require_client_cert,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Verify the server against the CA; present our own certificate when we have one (mTLS)."""
    if files.cert is not None and files.key is not None:
        key, cert = files._pair()
        return grpc.ssl_channel_credentials(
            root_certificates=files.ca.read_bytes(), private_key=key, certificate_chain=cert
        )
    return grpc.ssl_channel_credentials(root_certificates=files.ca.read_bytes())
