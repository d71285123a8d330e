"""The deployment PKI: each certificate names only its own service (``<identity>.coffer.internal``, no
localhost, no IP; the gateway's also names the loopback names its AWS-protocol endpoint is reached by) with
the usages the identity needs (the operator's certificate, handed to users, is a
client certificate only); a PKI issued before these rules is reissued under the same CA; a service's own PKI
directory holds the CA certificate and its own files, never the CA key nor another identity's key."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coffer.pki import AUDIT_KEY, SIGNING_KEY, SIGNING_PUB, ensure_pki, install_service_dir, is_current

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _names(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(v) for v in (*sans.get_values_for_type(x509.DNSName), *sans.get_values_for_type(x509.IPAddress))
    ]


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_each_certificate_names_only_its_service_with_the_usages_it_needs(tmp_path: Path) -> None:
    ensure_pki(tmp_path, region="local-1")
    expected = {
        # boto3 and the AWS CLI verify the host of their endpoint URL (https://localhost:<port>, 127.0.0.1)
        "gateway": (["gateway.coffer.internal", "localhost", "127.0.0.1", "::1"], {SERVER, CLIENT}),
        "store": (["store.coffer.internal"], {SERVER, CLIENT}),
        "kms": (["kms.coffer.internal"], {SERVER, CLIENT}),  # it calls the store (directory, audit Append)
        "rotation": (["rotation.coffer.internal"], {SERVER, CLIENT}),
        "operator": ([], {CLIENT}),
        "replicator.local-1": ([], {CLIENT}),
    }
    for identity, (names, usages) in expected.items():
        cert = _cert(tmp_path / f"{identity}.crt")
        assert _names(cert) == names, identity
        assert _usages(cert) == usages, identity


def _old_style_issue(pki_dir: Path, identity: str) -> None:
    """A certificate as the PKI issued them before: localhost and 127.0.0.1, server and client auth."""
    ca_cert = _cert(pki_dir / "ca.crt")
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans = [
        x509.DNSName(identity),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([SERVER, CLIENT]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (pki_dir / f"{identity}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_an_old_pki_is_reissued_under_the_same_ca(tmp_path: Path) -> None:
    ensure_pki(tmp_path)
    for identity in ("gateway", "operator", "kms"):
        _old_style_issue(tmp_path, identity)
        assert not is_current(tmp_path / f"{identity}.crt", identity)
    (tmp_path / SIGNING_KEY).unlink()
    ca_before = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "ca.key").read_bytes()
    store_before = (tmp_path / "store.crt").read_bytes()

    ensure_pki(tmp_path)

    assert ((tmp_path / "ca.crt").read_bytes(), (tmp_path / "ca.key").read_bytes()) == ca_before
    assert (tmp_path / "store.crt").read_bytes() == store_before  # a current certificate is kept
    ca = _cert(tmp_path / "ca.crt")
    for identity in ("gateway", "operator", "kms"):
        assert is_current(tmp_path / f"{identity}.crt", identity)
        names = _names(_cert(tmp_path / f"{identity}.crt"))
        assert ("localhost" in names) == (identity == "gateway"), identity
        assert names[:1] == ([] if identity == "operator" else [f"{identity}.coffer.internal"])
        _cert(tmp_path / f"{identity}.crt").verify_directly_issued_by(ca)
    assert (tmp_path / SIGNING_KEY).exists() and (tmp_path / SIGNING_PUB).exists()


def test_a_service_directory_holds_the_ca_certificate_and_its_own_files_only(tmp_path: Path) -> None:
    issuing = tmp_path / "pki"
    ensure_pki(issuing, region="local-1")
    peer_ca = tmp_path / "peer-ca.crt"
    peer_ca.write_bytes((issuing / "ca.crt").read_bytes())
    expected = {
        "gateway": {"ca.crt", "gateway.crt", "gateway.key", SIGNING_KEY},
        "store": {
            "ca.crt",
            "store.crt",
            "store.key",
            SIGNING_PUB,
            AUDIT_KEY,
            "replicator.local-1.crt",
            "replicator.local-1.key",
            "peer-local-2-ca.crt",
        },
        "kms": {"ca.crt", "kms.crt", "kms.key", SIGNING_PUB},
        "rotation": {"ca.crt", "rotation.crt", "rotation.key"},
    }
    for service, files in expected.items():
        target = tmp_path / "service-pki" / service
        target.mkdir(parents=True)
        (target / "stale.key").write_text("left from an earlier run")
        extra = {"peer-local-2-ca.crt": peer_ca} if service == "store" else {}
        install_service_dir(issuing, target, service, region="local-1", extra=extra)
        assert set(os.listdir(target)) == files, service
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        assert all(stat.S_IMODE((target / f).stat().st_mode) == 0o600 for f in files)
        assert (target / "ca.crt").read_bytes() == (issuing / "ca.crt").read_bytes()
