"""TLS material and gRPC credentials. Every service has its own certificate signed by the deployment CA; the
certificate's common name is the service identity that peers authorize."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc


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
