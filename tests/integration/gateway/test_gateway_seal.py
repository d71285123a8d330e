"""The kms in the shamir seal mode (COFFER_SEAL=shamir), through the gateway: init 5/3, restart → sealed
(GetSecretValue refused with the sealed error, describe/list still answer, health NOT_SERVING for crypto),
two shares leave it sealed, a corrupted share is named and does not count, the third unseals, seal closes it
again; only operators may init, unseal and seal; and neither the root key nor the unseal key is in any file
under COFFER_HOME or any row of the kms schema."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer.cli.main import main
from coffer.client.aio import AsyncCofferClient
from coffer.client.credentials import Credentials
from coffer.core import errors
from coffer.crypto import aead, shamir
from coffer.kms.servicer import SERVICE_NAME as KMS_SERVICE
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles
from coffer.testing.shares import corrupt_share
from coffer.testing.stack import ServiceStack, provisioned_stack
from coffer.testing.wait import eventually

from .conftest import write_profile

pytestmark = pytest.mark.integration

SEALED = "The KMS is sealed: unseal it with `coffer operator unseal` ({k} of 3 shares given)."


@dataclass
class SealedStack:
    services: ServiceStack
    home: Path
    endpoint: str
    admin: Credentials
    bob: Credentials
    profile: Path

    def client(self, token: Credentials | None = None) -> AsyncCofferClient:
        return AsyncCofferClient(self.endpoint, self.services.ca_file, token or self.admin)


@pytest.fixture
async def sealed(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[SealedStack]:
    home = tmp_path / "home"
    home.mkdir()
    services = await provisioned_stack(
        home=home, pki_dir=pki_dir, database_url=database_url, COFFER_SEAL="shamir"
    )
    try:
        await services.start_kms()
        await services.start_store()
        admin = await services.credential("user/admin")
        bob = await services.credential("user/bob")
        gateway = await services.start_gateway()
        endpoint = f"127.0.0.1:{gateway.port}"
        profile = write_profile(
            tmp_path / "profile.json", endpoint=endpoint, pki_dir=pki_dir, credentials=admin, services={}
        )
        yield SealedStack(services, home, endpoint, admin, bob, profile)
    finally:
        await services.aclose()


async def cli(stack: SealedStack, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, ["--profile", str(stack.profile), *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def crypto_health(stack: SealedStack) -> str:
    kms_addr = stack.services.env["COFFER_KMS_ADDR"]
    async with secure_channel(
        kms_addr, TlsFiles.for_identity(stack.services.pki_dir, "operator"), server_name="kms"
    ) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=KMS_SERVICE), timeout=5
        )
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return name


async def test_init_restart_unseal_seal_through_the_gateway(sealed: SealedStack) -> None:
    # A fresh shamir kms is sealed and not initialised: crypto refused, health NOT_SERVING.
    assert await crypto_health(sealed) == "NOT_SERVING"
    async with sealed.client() as client:
        with pytest.raises(errors.KmsSealed, match="not initialized"):
            await client.create_secret(name="early", secret_string="x")

    code, out, err = await cli(sealed, "operator", "init", "--key-shares", "5", "--key-threshold", "3")
    assert code == 0, err
    body = json.loads(out)
    shares: list[str] = body["Shares"]
    assert len(shares) == 5 and body["Status"]["Mode"] == "shamir" and not body["Status"].get("Sealed")
    assert await crypto_health(sealed) == "SERVING"

    async with sealed.client() as client:
        await client.create_secret(name="db/prod", secret_string="canary-value-1")
        assert (await client.get_secret_value(secret_id="db/prod")).secret_string == "canary-value-1"

    # Restart the kms: it starts sealed.
    await sealed.services.stop_kms()
    await sealed.services.start_kms()
    assert await crypto_health(sealed) == "NOT_SERVING"
    async with sealed.client() as client:
        refused = await eventually(
            lambda: _refusal(client), timeout=15, until=lambda e: isinstance(e, errors.KmsSealed)
        )
        assert refused.code == "KMSSealedException" and refused.message == SEALED.format(k=0)
        # describe and list keep working
        assert (await client.describe_secret(secret_id="db/prod")).name == "db/prod"
        assert [s.name for s in (await client.list_secrets()).secret_list] == ["db/prod"]
        assert len((await client.kms.list_keys()).keys) >= 1

        code, out, err = await cli(sealed, "operator", "unseal", shares[0])
        assert code == 0, err
        assert json.loads(out)["Status"]["Progress"] == 1
        code, out, _ = await cli(sealed, "operator", "unseal", shares[3])
        assert json.loads(out)["Status"]["Progress"] == 2
        with pytest.raises(errors.KmsSealed) as info:
            await client.get_secret_value(secret_id="db/prod")
        assert info.value.message == SEALED.format(k=2)

        bad = corrupt_share(shares[4], 6)
        code, _, err = await cli(sealed, "operator", "unseal", bad)
        assert code == 254
        assert "InvalidUnsealShareException" in err and shamir.label(bad) in err and "checksum" in err
        code, out, _ = await cli(sealed, "operator", "status")
        status = json.loads(out)["Status"]
        assert status["Sealed"] and status["Progress"] == 2 and status["Threshold"] == 3

        code, out, _ = await cli(sealed, "operator", "unseal", shares[4])
        assert code == 0 and not json.loads(out)["Status"].get("Sealed")
        assert (await client.get_secret_value(secret_id="db/prod")).secret_string == "canary-value-1"
        assert await crypto_health(sealed) == "SERVING"

        code, out, _ = await cli(sealed, "operator", "seal")
        assert code == 0 and json.loads(out)["Status"]["Sealed"]
        assert await crypto_health(sealed) == "NOT_SERVING"
        # the store drops the data keys it cached when the kms seals (a reset of the key-change stream)
        refused = await eventually(
            lambda: _refusal(client), timeout=10, until=lambda e: isinstance(e, errors.KmsSealed)
        )
        assert refused.message == SEALED.format(k=0)

    await _assert_no_plaintext_root(sealed, shares)


async def _refusal(client: AsyncCofferClient) -> errors.CofferError | None:
    try:
        await client.get_secret_value(secret_id="db/prod")
    except errors.CofferError as exc:
        return exc
    return None


async def _assert_no_plaintext_root(stack: SealedStack, shares: list[str]) -> None:
    """Canary check: recover the unseal key and the root key from three shares and the stored record, then
    look for them in every file under COFFER_HOME and in every row of every kms table."""
    unseal_key = shamir.combine([shamir.parse_share(s) for s in shares[:3]])
    admin = await asyncpg.connect(stack.services.env["COFFER_DATABASE_URL"])
    try:
        encrypted = await admin.fetchval("SELECT encrypted_root FROM kms.seal")
        root = aead.open_sealed(unseal_key, bytes(encrypted), aad=b"coffer/kms/seal/root-key/v1")
        tables = await admin.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'kms'"
        )
        dump: list[str] = []
        for t in tables:
            rows = await admin.fetch(f'SELECT t::text AS row FROM kms."{t["table_name"]}" t')
            dump.extend(r["row"] for r in rows)
    finally:
        await admin.close()
    assert len(root) == 32 and {t["table_name"] for t in tables} >= {"seal", "key_materials"}
    text = "\n".join(dump).lower()
    for secret in (root, unseal_key):
        for form in (secret.hex(), base64.b64encode(secret).decode()):
            assert form.lower() not in text
        files = [p for p in stack.home.rglob("*") if p.is_file()]
        assert files, "COFFER_HOME should hold the stack's files"
        for path in files:
            data = path.read_bytes()
            assert secret not in data and secret.hex().encode() not in data, path
    assert not (stack.home / "keys" / "root.key").exists()


async def test_only_operators_may_init_unseal_and_seal(sealed: SealedStack) -> None:
    async with sealed.client(sealed.bob) as bob, sealed.client() as admin:
        for operation, fields in (
            ("OperatorInit", {"key_shares": 3, "key_threshold": 2}),
            ("OperatorUnseal", {"share": "whatever"}),
            ("OperatorSeal", {}),
        ):
            with pytest.raises(errors.AccessDenied, match=f"kms:{operation}.*operators only"):
                await bob.operator.call(operation, **fields)
        status = (await bob.operator.call("OperatorStatus")).status  # type: ignore[attr-defined]
        assert status.sealed and not status.initialized
        init = await admin.operator.call("OperatorInit", key_shares=3, key_threshold=2)
        assert len(init.shares) == 3  # type: ignore[attr-defined]
        with pytest.raises(errors.AccessDenied):
            await bob.operator.call("OperatorSeal")
        assert not (await admin.operator.call("OperatorStatus")).status.sealed  # type: ignore[attr-defined]
        with pytest.raises(errors.InvalidRequest, match="already initialized"):
            await admin.operator.call("OperatorInit", key_shares=3, key_threshold=2)


async def test_the_store_cannot_reach_the_seal(sealed: SealedStack) -> None:
    from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc

    async with secure_channel(
        sealed.services.env["COFFER_KMS_ADDR"],
        TlsFiles.for_identity(sealed.services.pki_dir, "store"),
        server_name="kms",
    ) as channel:
        with pytest.raises(errors.AccessDenied, match=r"store may not call .*SealService/OperatorStatus"):
            await kms_pb2_grpc.SealServiceStub(channel).OperatorStatus(kms_pb2.OperatorStatusRequest())


async def test_rotate_root_from_the_cli_keeps_the_shares(sealed: SealedStack) -> None:
    code, out, err = await cli(sealed, "operator", "init", "--key-shares", "3", "--key-threshold", "2")
    assert code == 0, err
    shares: list[str] = json.loads(out)["Shares"]
    old = json.loads(out)["Status"]["RootKeyId"]
    async with sealed.client() as client:
        await client.create_secret(name="db/prod", secret_string="canary-value-1")
    code, out, err = await cli(sealed, "operator", "rotate-root", "--wait")
    assert code == 0, err
    status = json.loads(out)["Status"]
    assert status["Mode"] == "shamir" and status["RootKeyId"] != old and not status.get("Rotation")
    code, _, err = await cli(sealed, "operator", "migrate-seal", "--to", "pkcs11")
    assert code == 254 and "migrate-seal moves a deployment from the 'file' mode" in err
    # a restart: the same shares open the new root
    await sealed.services.stop_kms()
    await sealed.services.start_kms()
    for share in shares[:2]:
        code, out, _ = await cli(sealed, "operator", "unseal", share)
    assert (
        not json.loads(out)["Status"].get("Sealed")
        and json.loads(out)["Status"]["RootKeyId"] == status["RootKeyId"]
    )
    async with sealed.client() as client:
        got = await eventually(
            lambda: client.get_secret_value(secret_id="db/prod"), timeout=15, retry_on=(errors.Unavailable,)
        )
        assert got.secret_string == "canary-value-1"
    code, _, err = await cli(sealed, "operator", "rotate-root")
    assert code == 0, err
    async with sealed.client(sealed.bob) as bob:
        with pytest.raises(errors.AccessDenied, match=r"kms:OperatorRotateRoot.*operators only"):
            await bob.operator.call("OperatorRotateRoot")
