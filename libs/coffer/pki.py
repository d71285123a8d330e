"""Development PKI: a CA and one certificate per service identity (CN = identity, SAN = identity, localhost,
127.0.0.1, ::1). Keys are ECDSA P-256, files are written 0600 in a 0700 directory."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_IDENTITIES = ("gateway", "store", "kms", "rotation", "operator")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def ensure_ca(pki_dir: Path, *, common_name: str = "Coffer dev CA") -> None:
    pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki_dir, 0o700)
    if (pki_dir / "ca.crt").exists() and (pki_dir / "ca.key").exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(pki_dir / "ca.key", _key_pem(key))
    _write_private(pki_dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))


def issue(pki_dir: Path, identity: str, *, extra_names: Iterable[str] = (), days: int = 825) -> None:
    """Issue ``<identity>.crt``/``.key`` signed by the CA (server and client auth)."""
    ca_cert, ca_key = _load_ca(pki_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    dns = [identity, "localhost", *extra_names]
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns)]
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(pki_dir / f"{identity}.key", _key_pem(key))
    _write_private(pki_dir / f"{identity}.crt", cert.public_bytes(serialization.Encoding.PEM))


def replicator_identity(region: str) -> str:
    """The identity a region's store replicator presents to its peer regions' stores."""
    return f"replicator.{region}"


def ensure_pki(
    pki_dir: Path, identities: Iterable[str] = SERVICE_IDENTITIES, *, region: str | None = None
) -> None:
    """Create the CA and any missing identity certificate; existing files are kept. With ``region``, also
    the region's ``replicator.<region>`` identity (cross-region replication between stores)."""
    # Each region's CA needs its own name: a store trusts its peers' CAs too, and TLS picks the CA that
    # verifies a certificate by its issuer name.
    ensure_ca(pki_dir, common_name="Coffer dev CA" if region is None else f"Coffer dev CA ({region})")
    wanted = list(identities)
    if region is not None:
        wanted.append(replicator_identity(region))
    for identity in wanted:
        if not ((pki_dir / f"{identity}.crt").exists() and (pki_dir / f"{identity}.key").exists()):
            issue(pki_dir, identity)
