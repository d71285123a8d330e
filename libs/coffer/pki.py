"""Development PKI: a CA, one certificate per identity, and the gateway's principal-signing key pair.

A certificate's CN is the identity; its usages are what the identity does: the services that serve (gateway,
store, kms, rotation) get server auth and one DNS name, ``<identity>.coffer.internal``, which their clients
verify; the identities that call others (gateway, store, rotation, ``operator``, the replicators) get client
auth, with no DNS name when they serve nothing. No service certificate but the gateway's names localhost or an
IP address, so a certificate stolen from one identity cannot pose as another service; the gateway's also names
``localhost``, ``127.0.0.1`` and ``::1`` (:data:`GATEWAY_LOCAL_NAMES`), because AWS clients (boto3, the AWS
CLI) verify the host of their ``endpoint_url`` and cannot be told another name to check. That adds nothing a
stolen gateway certificate could not already do: the gateway is the public door, and the other services verify
their peers by ``<identity>.coffer.internal`` and the certificate's CN, never by these names. Any other
identity (a custom rotation function's) is a server named by the identity itself. Keys are ECDSA P-256
(Ed25519 for principal signing); files are written 0600 in a 0700 directory. Certificates issued before these
rules are reissued (under the same CA) by :func:`ensure_pki`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coffer.rpc.tls import service_host

SERVICE_IDENTITIES = ("gateway", "store", "kms", "rotation", "operator")
#: Identities that serve (server auth, named ``<identity>.coffer.internal``).
SERVERS = frozenset({"gateway", "store", "kms", "rotation"})
#: Identities that call other services with their certificate (client auth).
CLIENTS = frozenset({"gateway", "store", "kms", "rotation", "operator"})
#: The gateway's principal assertions: the private key (gateway only) and the public key (store and kms).
SIGNING_KEY = "principal-signing.key"
SIGNING_PUB = "principal-signing.pub"
#: The store's Ed25519 key that signs the audit trail's digests (``coffer.store.audit_trail``).
AUDIT_KEY = "audit-signing.key"
#: The loopback names of the gateway's certificate (its AWS-protocol endpoint, ``https://localhost:<port>``
#: or ``https://127.0.0.1:<port>``): DNS names, then IP addresses.
GATEWAY_LOCAL_NAMES: tuple[str, ...] = ("localhost",)
GATEWAY_LOCAL_IPS: tuple[str, ...] = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Usage:
    """What a certificate of one identity may do: its DNS names, server auth, client auth."""

    dns: tuple[str, ...]
    server: bool
    client: bool
    ips: tuple[str, ...] = ()


def usage_of(identity: str, extra_names: Iterable[str] = ()) -> Usage:
    if identity.startswith("replicator."):
        return Usage(dns=tuple(extra_names), server=False, client=True)
    if identity in SERVERS or identity in CLIENTS:
        dns = (service_host(identity),) if identity in SERVERS else ()
        local = identity == "gateway"
        return Usage(
            dns=(*dns, *(GATEWAY_LOCAL_NAMES if local else ()), *extra_names),
            server=identity in SERVERS,
            client=identity in CLIENTS,
            ips=GATEWAY_LOCAL_IPS if local else (),
        )
    return Usage(dns=(identity, *extra_names), server=True, client=False)


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


def _usages(usage: Usage) -> list[x509.ObjectIdentifier]:
    return [
        *([ExtendedKeyUsageOID.SERVER_AUTH] if usage.server else []),
        *([ExtendedKeyUsageOID.CLIENT_AUTH] if usage.client else []),
    ]


def issue(pki_dir: Path, identity: str, *, extra_names: Iterable[str] = (), days: int = 825) -> None:
    """Issue ``<identity>.crt``/``.key`` signed by the CA, with the names and usages of :func:`usage_of`
    (``extra_names``: more DNS names, e.g. the gateway's public name)."""
    ca_cert, ca_key = _load_ca(pki_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = usage_of(identity, extra_names)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_usages(usage)), critical=False)
    )
    if usage.dns or usage.ips:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(usage.dns)]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in usage.ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(pki_dir / f"{identity}.key", _key_pem(key))
    _write_private(pki_dir / f"{identity}.crt", cert.public_bytes(serialization.Encoding.PEM))


def replicator_identity(region: str) -> str:
    """The identity a region's store replicator presents to its peer regions' stores."""
    return f"replicator.{region}"


def is_current(cert_file: Path, identity: str) -> bool:
    """``cert_file`` has exactly the names and usages :func:`usage_of` gives ``identity`` today (certificates
    of older PKIs named localhost and 127.0.0.1 and could both serve and call: they are not current)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    usage = usage_of(identity)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names: list[object] = [
            *sans.get_values_for_type(x509.DNSName),
            *sans.get_values_for_type(x509.IPAddress),
        ]
    except x509.ExtensionNotFound:
        names = []
    try:
        ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return False
    return sorted(map(str, names)) == sorted((*usage.dns, *usage.ips)) and set(ekus) == set(_usages(usage))


def ensure_signing_key(pki_dir: Path) -> None:
    """The gateway's Ed25519 principal-signing key pair (:data:`SIGNING_KEY`, :data:`SIGNING_PUB`), created
    when missing. It is not the gateway's TLS key: the store and the kms hold only its public half."""
    if (pki_dir / SIGNING_KEY).exists() and (pki_dir / SIGNING_PUB).exists():
        return
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(
        pki_dir / SIGNING_KEY,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    _write_private(
        pki_dir / SIGNING_PUB,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def ensure_audit_key(pki_dir: Path) -> None:
    """The store's Ed25519 audit-digest signing key (:data:`AUDIT_KEY`, PKCS#8 PEM), created when missing.
    Its public half is served by ``AuditService/GetDigestPublicKey`` (``coffer audit verify``)."""
    if (pki_dir / AUDIT_KEY).exists():
        return
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(
        pki_dir / AUDIT_KEY,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def ensure_pki(
    pki_dir: Path, identities: Iterable[str] = SERVICE_IDENTITIES, *, region: str | None = None
) -> None:
    """Create the CA and any missing identity certificate (and, when the gateway is among them, its signing
    key pair); current files are kept, certificates of an older PKI reissued under the same CA. With
    ``region``, also the region's ``replicator.<region>`` identity (cross-region replication between
    stores)."""
    # Each region's CA needs its own name: a store trusts its peers' CAs too, and TLS picks the CA that
    # verifies a certificate by its issuer name.
    ensure_ca(pki_dir, common_name="Coffer dev CA" if region is None else f"Coffer dev CA ({region})")
    wanted = list(identities)
    if region is not None:
        wanted.append(replicator_identity(region))
    for identity in wanted:
        if not ((pki_dir / f"{identity}.key").exists() and is_current(pki_dir / f"{identity}.crt", identity)):
            issue(pki_dir, identity)
    if "gateway" in wanted:
        ensure_signing_key(pki_dir)
    if "store" in wanted:
        ensure_audit_key(pki_dir)


def service_files(service: str, *, region: str | None = None) -> tuple[str, ...]:
    """The files of a PKI directory that the process ``service`` needs, besides ``ca.crt``: its own
    certificate and key, the gateway's principal-signing key (gateway) or its public half (store, kms), the
    region's replicator certificate (store). Never the CA key, never another service's key."""
    files = [f"{service}.crt", f"{service}.key"]
    if service == "gateway":
        files.append(SIGNING_KEY)
    if service in ("store", "kms"):
        files.append(SIGNING_PUB)
    if service == "store":
        files.append(AUDIT_KEY)
    if service == "store" and region is not None:
        files += [f"{replicator_identity(region)}.crt", f"{replicator_identity(region)}.key"]
    return tuple(files)


def install_service_dir(
    pki_dir: Path,
    service_dir: Path,
    service: str,
    *,
    region: str | None = None,
    extra: Mapping[str, Path] | None = None,
) -> Path:
    """Fill ``service_dir`` (0700) with ``ca.crt`` and :func:`service_files` copied from the issuing
    ``pki_dir``, plus ``extra`` (file name -> source, e.g. peer regions' CA certificates), all 0600;
    anything else in it is removed. This directory is all the service's process is pointed at
    (``COFFER_PKI_DIR``): the unit a deployment mounts into the service's container."""
    service_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(service_dir, 0o700)
    wanted = {"ca.crt": pki_dir / "ca.crt"}
    wanted.update({name: pki_dir / name for name in service_files(service, region=region)})
    wanted.update(extra or {})
    for stale in service_dir.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    for name, source in wanted.items():
        _write_private(service_dir / name, source.read_bytes())
    return service_dir
