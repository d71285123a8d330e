"""The kms's root of trust (issue 12) against the real service, PostgreSQL and mTLS gRPC: the pkcs11 seal on
SoftHSM2 (Encrypt/Decrypt and secrets through the HSM key, the key non-extractable, a removed token giving a
clear retryable error and a restored one healing), ``rotate-root`` under concurrent Encrypt/Decrypt with
zero failed calls in the file, shamir and pkcs11 modes, a kms SIGKILLed mid-rotation that resumes on restart,
and ``migrate-seal`` from file to shamir and to pkcs11, with a canary check that no file under COFFER_HOME and
no row of the kms schema holds the root key or CMK material in plaintext.

The SoftHSM tests need Debian's ``softhsm2`` (``make test`` installs it when missing and run as root); without
it they skip and say so. Each makes its own token in a temporary SOFTHSM2_CONF directory."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.client.aio import AsyncCofferClient
from coffer.core import errors
from coffer.crypto import aead, shamir
from coffer.crypto.rootkey import MaterialBinding, RootKey
from coffer.kms.hsm import DEFAULT_MODULE, Hsm, HsmConfig, cka_id_of
from coffer.rootkey_file import load_root_key
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles
from coffer.settings import service_env
from coffer.testing.stack import ServiceStack, provisioned_stack
from coffer.testing.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PIN = "246810"
SO_PIN = "13579135"
TOKEN = "coffer-test"
KEY_LABEL = "coffer-root"
_SOFTHSM_UTIL = shutil.which("softhsm2-util")


def _need_softhsm() -> None:
    if _SOFTHSM_UTIL is None or not Path(DEFAULT_MODULE).exists():
        pytest.skip(
            "SoftHSM2 is not installed (softhsm2-util / /usr/lib/softhsm/libsofthsm2.so): `make test` "
            "installs Debian's softhsm2 when run as root with apt-get"
        )


@dataclass
class SoftHsm:
    directory: Path
    tokens: Path
    pin_file: Path

    def env(self) -> dict[str, str]:
        return {
            "COFFER_PKCS11_MODULE": DEFAULT_MODULE,
            "COFFER_PKCS11_TOKEN_LABEL": TOKEN,
            "COFFER_PKCS11_PIN_FILE": str(self.pin_file),
            "COFFER_PKCS11_KEY_LABEL": KEY_LABEL,
        }


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    """A fresh SoftHSM2 token in its own configuration (SOFTHSM2_CONF, set for this process and its kms)."""
    _need_softhsm()
    assert _SOFTHSM_UTIL is not None
    directory = tmp_path / "softhsm"
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [_SOFTHSM_UTIL, "--init-token", "--free", "--label", TOKEN, "--so-pin", SO_PIN, "--pin", PIN],
        check=True,
        capture_output=True,
    )
    pin_file = directory / "pin"
    pin_file.write_text(PIN + "\n")
    return SoftHsm(directory, tokens, pin_file)


@dataclass
class Kms:
    """A stack whose kms is reached directly, as the store ("store") and the gateway ("gateway") reach it."""

    services: ServiceStack
    home: Path
    channels: list[object] = field(default_factory=list)

    def _channel(self, identity: str) -> object:
        channel = secure_channel(
            self.services.env["COFFER_KMS_ADDR"],
            TlsFiles.for_identity(self.services.pki_dir, identity),
            server_name="kms",
        )
        self.channels.append(channel)
        return channel

    def keys(self) -> kms_pb2_grpc.KeyManagementServiceStub:
        return kms_pb2_grpc.KeyManagementServiceStub(self._channel("store"))

    def seal(self) -> kms_pb2_grpc.SealServiceStub:
        return kms_pb2_grpc.SealServiceStub(self._channel("gateway"))

    async def close_channels(self) -> None:
        for channel in self.channels:
            await channel.close()  # type: ignore[attr-defined]
        self.channels.clear()

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.services.env["COFFER_DATABASE_URL"])

    async def root_ids_of_material(self) -> set[str]:
        conn = await self.admin()
        try:
            rows = await conn.fetch("SELECT DISTINCT root_key_id FROM kms.key_materials")
            return {r["root_key_id"] for r in rows}
        finally:
            await conn.close()

    async def rotation_row(self) -> asyncpg.Record | None:
        conn = await self.admin()
        try:
            row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM kms.root_rotation")
            return row
        finally:
            await conn.close()


async def _stack(tmp_path: Path, pki_dir: Path, database_url: str, **env: str) -> Kms:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    services = await provisioned_stack(home=home, pki_dir=pki_dir, database_url=database_url, **env)
    return Kms(services, home)


@pytest.fixture
async def stacks() -> AsyncIterator[list[Kms]]:
    made: list[Kms] = []
    try:
        yield made
    finally:
        for kms in made:
            await kms.close_channels()
            await kms.services.aclose()


async def start(stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str, **env: str) -> Kms:
    kms = await _stack(tmp_path, pki_dir, database_url, **{"COFFER_ROOT_ROTATION_BATCH": "3", **env})
    stacks.append(kms)
    await kms.services.start_kms()
    # The kms records the public (gateway) calls it serves in the store's audit trail: a store must run.
    await kms.services.start_store()
    return kms


async def make_keys_and_blobs(kms: Kms, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` keys (one rotated on demand: two material versions), each with a blob: [(blob, plaintext)]."""
    stub = kms.keys()
    out = []
    for i in range(n):
        key_id = (await stub.CreateKey(kms_pb2.CreateKeyRequest())).key_metadata.key_id
        if i == 0:
            old = await stub.Encrypt(kms_pb2.EncryptRequest(key_id=key_id, plaintext=b"before-rotation"))
            out.append((old.ciphertext_blob, b"before-rotation"))
            await stub.RotateKeyOnDemand(kms_pb2.RotateKeyOnDemandRequest(key_id=key_id))
        plaintext = f"canary-plaintext-{i}".encode()
        blob = await stub.Encrypt(kms_pb2.EncryptRequest(key_id=key_id, plaintext=plaintext))
        out.append((blob.ciphertext_blob, plaintext))
    return out


async def all_decrypt(kms: Kms, blobs: list[tuple[bytes, bytes]]) -> None:
    stub = kms.keys()
    for blob, plaintext in blobs:
        got = await stub.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=blob))
        assert got.plaintext == plaintext


# --- pkcs11 -------------------------------------------------------------------------------------------------


async def test_pkcs11_seal_encrypts_and_its_key_cannot_leave_the_hsm(
    softhsm: SoftHsm, stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    kms = await start(stacks, tmp_path, pki_dir, database_url, COFFER_SEAL="pkcs11", **softhsm.env())
    status = (await kms.seal().OperatorStatus(kms_pb2.OperatorStatusRequest())).status
    assert status.mode == "pkcs11" and not status.sealed and status.root_key_id.startswith("hsm-")
    blobs = await make_keys_and_blobs(kms, 3)
    await all_decrypt(kms, blobs)
    assert await kms.root_ids_of_material() == {status.root_key_id}

    # secrets too, through the store and the gateway
    token = await kms.services.credential("user/admin")
    await kms.services.start_gateway()
    endpoint = kms.services.env["COFFER_GATEWAY_ADDR"]
    async with AsyncCofferClient(endpoint, kms.services.ca_file, token) as client:
        await client.create_secret(name="db/hsm", secret_string="hsm-secret-value")
        assert (await client.get_secret_value(secret_id="db/hsm")).secret_string == "hsm-secret-value"

    # a restart finds the same key (not a second one)
    await kms.services.stop_kms()
    await kms.services.start_kms()
    await all_decrypt(kms, blobs)
    await kms.services.stop_kms()  # the HSM is ours alone now (one PKCS#11 caller per process at a time)

    lib = pkcs11.lib(DEFAULT_MODULE)
    lib.reinitialize()
    session = lib.get_token(token_label=TOKEN).open(rw=True, user_pin=PIN)
    try:
        keys = list(
            session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: KEY_LABEL})
        )
        assert len(keys) == 1
        root = keys[0]
        assert bytes(root[Attribute.ID]) == cka_id_of(status.root_key_id)
        assert root[Attribute.EXTRACTABLE] is False and root[Attribute.NEVER_EXTRACTABLE] is True
        assert root[Attribute.SENSITIVE] is True and root[Attribute.VALUE_LEN] == 32
        with pytest.raises(p11.AttributeSensitive):
            root[Attribute.VALUE]
        wrapper = session.generate_key(KeyType.AES, 256, label="exporter", store=False)
        assert isinstance(wrapper, pkcs11.types.WrapMixin) and isinstance(root, pkcs11.Key)
        with pytest.raises(p11.KeyUnextractable):
            wrapper.wrap_key(root, mechanism=Mechanism.AES_KEY_WRAP)
        with pytest.raises((p11.AttributeReadOnly, p11.PKCS11Error)):
            root[Attribute.EXTRACTABLE] = True
        assert root[Attribute.EXTRACTABLE] is False
    finally:
        session.close()


async def test_pkcs11_token_loss_is_a_clear_retryable_error_and_restoring_it_heals(
    softhsm: SoftHsm, stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    kms = await start(
        stacks,
        tmp_path,
        pki_dir,
        database_url,
        COFFER_SEAL="pkcs11",
        COFFER_DATA_KEY_CACHE_SECONDS="0",  # every read reaches the kms
        **softhsm.env(),
    )
    blobs = await make_keys_and_blobs(kms, 2)
    token = await kms.services.credential("user/admin")
    await kms.services.start_gateway()
    client = AsyncCofferClient(kms.services.env["COFFER_GATEWAY_ADDR"], kms.services.ca_file, token)
    async with client:
        await client.create_secret(name="db/hsm", secret_string="hsm-secret-value")
    stub = kms.keys()
    away = softhsm.directory / "tokens.away"
    softhsm.tokens.rename(away)  # the token is gone
    async with AsyncCofferClient(
        kms.services.env["COFFER_GATEWAY_ADDR"], kms.services.ca_file, token
    ) as client:
        with pytest.raises(errors.KmsHsmUnavailable) as read:
            await client.get_secret_value(secret_id="db/hsm")
        assert (
            read.value.code == "KMSHsmUnavailableException" and f"HSM token '{TOKEN}'" in read.value.message
        )
    for _ in range(2):  # and stays a clear, retryable error (UNAVAILABLE), naming the HSM token
        with pytest.raises(errors.KmsHsmUnavailable) as info:
            await stub.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=blobs[0][0]))
        assert info.value.code == "KMSHsmUnavailableException"
        assert (
            f"HSM token '{TOKEN}'" in info.value.message
            and "Retry when the token is back" in info.value.message
        )
        assert isinstance(info.value, errors.Unavailable)
    with pytest.raises(errors.KmsHsmUnavailable):
        await stub.CreateKey(kms_pb2.CreateKeyRequest())
    # describe and list do not need the HSM
    assert len((await stub.ListKeys(kms_pb2.ListKeysRequest())).keys) == 3  # 2 and the secrets default key
    away.rename(softhsm.tokens)  # the token is back: the next call logs in again
    await all_decrypt(kms, blobs)
    await stub.CreateKey(kms_pb2.CreateKeyRequest())
    async with AsyncCofferClient(
        kms.services.env["COFFER_GATEWAY_ADDR"], kms.services.ca_file, token
    ) as client:
        assert (await client.get_secret_value(secret_id="db/hsm")).secret_string == "hsm-secret-value"


# --- rotate-root under load ---------------------------------------------------------------------------------


@dataclass
class Load:
    calls: int = 0
    failures: list[BaseException] = field(default_factory=list)


async def _steady_load(
    kms: Kms, blobs: list[tuple[bytes, bytes]], key_ids: list[str], stop: asyncio.Event, load: Load
) -> None:
    """Concurrent Encrypt/Decrypt (and a CreateKey now and then) until ``stop``; every failure kept."""

    async def worker(n: int) -> None:
        stub = kms.keys()
        i = n
        while not stop.is_set():
            i += 1
            try:
                blob, plaintext = blobs[i % len(blobs)]
                got = await stub.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=blob))
                assert got.plaintext == plaintext
                key_id = key_ids[i % len(key_ids)]
                enc = await stub.Encrypt(kms_pb2.EncryptRequest(key_id=key_id, plaintext=b"load-%d" % i))
                back = await stub.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=enc.ciphertext_blob))
                assert back.plaintext == b"load-%d" % i
                if i % 7 == 0:
                    new = await stub.CreateKey(kms_pb2.CreateKeyRequest())
                    enc = await stub.Encrypt(
                        kms_pb2.EncryptRequest(key_id=new.key_metadata.key_id, plaintext=b"new-%d" % i)
                    )
                    blobs.append((enc.ciphertext_blob, b"new-%d" % i))
                load.calls += 1
            except BaseException as exc:  # every failure is counted and shown
                load.failures.append(exc)
                return

    await asyncio.gather(*(worker(n) for n in range(4)))


async def _key_ids(kms: Kms) -> list[str]:
    return [k.key_id for k in (await kms.keys().ListKeys(kms_pb2.ListKeysRequest(limit=1000))).keys]


async def _rotate_under_load(kms: Kms, n_keys: int = 12) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    blobs = await make_keys_and_blobs(kms, n_keys)
    old = (await kms.seal().OperatorStatus(kms_pb2.OperatorStatusRequest())).status.root_key_id
    stop = asyncio.Event()
    load = Load()
    load_task = asyncio.create_task(_steady_load(kms, blobs, await _key_ids(kms), stop, load))
    # the load runs before, during and after the rotation
    await eventually(lambda: load.calls + len(load.failures), timeout=30, until=lambda n: n >= 4)
    done = await kms.seal().OperatorRotateRoot(kms_pb2.OperatorRotateRootRequest(wait=True), timeout=120)
    calls_at_end = load.calls
    await eventually(
        lambda: load.calls + len(load.failures), timeout=30, until=lambda n: n >= calls_at_end + 4
    )
    stop.set()
    await load_task
    assert load.failures == [], load.failures[:3]
    assert load.calls > 0
    new = done.status.root_key_id
    assert new != old and not done.status.rotation and done.status.rewrapped == 0
    assert await kms.root_ids_of_material() == {new}
    assert await kms.rotation_row() is None
    await all_decrypt(kms, blobs)
    return old, new, blobs


async def test_rotate_root_in_file_mode_under_load(
    stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    kms = await start(stacks, tmp_path, pki_dir, database_url)
    _old, new, blobs = await _rotate_under_load(kms)
    root_file = kms.home / "keys" / "root.key"
    assert load_root_key(root_file).key_id == new  # the old key file is replaced: the old root is gone
    assert not (kms.home / "keys" / "root.key.next").exists()
    await kms.services.stop_kms()
    await kms.services.start_kms()  # a restart with the new file
    await all_decrypt(kms, blobs)


async def test_rotate_root_in_shamir_mode_under_load(
    stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    kms = await start(stacks, tmp_path, pki_dir, database_url, COFFER_SEAL="shamir")
    init = await kms.seal().OperatorInit(kms_pb2.OperatorInitRequest(key_shares=3, key_threshold=2))
    _old, new, blobs = await _rotate_under_load(kms)
    unseal_key = shamir.combine([shamir.parse_share(s) for s in init.shares[:2]])
    conn = await kms.admin()
    try:
        row = await conn.fetchrow("SELECT encrypted_root, root_key_id FROM kms.seal")
    finally:
        await conn.close()
    assert row["root_key_id"] == new
    root = aead.open_sealed(unseal_key, bytes(row["encrypted_root"]), aad=b"coffer/kms/seal/root-key/v1")
    assert RootKey(root).key_id == new  # the stored root is the new one, under the same unseal key
    await kms.services.stop_kms()
    await kms.services.start_kms()
    for share in init.shares[1:]:
        await kms.seal().OperatorUnseal(kms_pb2.OperatorUnsealRequest(share=share))
    await all_decrypt(kms, blobs)
    await _assert_no_plaintext_keys(kms, {root}, blobs)


async def test_rotate_root_in_pkcs11_mode_under_load(
    softhsm: SoftHsm, stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    kms = await start(stacks, tmp_path, pki_dir, database_url, COFFER_SEAL="pkcs11", **softhsm.env())
    _old, new, blobs = await _rotate_under_load(kms)
    hsm = kms.services.kms.hsm if kms.services.kms else None
    assert hsm is not None
    assert await hsm.key_ids() == [new]  # the old HSM key object is destroyed
    conn = await kms.admin()
    try:
        assert await conn.fetchval("SELECT root_key_id FROM kms.hsm_root") == new
    finally:
        await conn.close()
    await _assert_no_plaintext_keys(kms, set(), blobs)


# --- SIGKILL mid-rotation -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("mode", ["file", "shamir", "pkcs11"])
async def test_a_rotation_killed_midway_resumes_on_restart(
    mode: str,
    request: pytest.FixtureRequest,
    stacks: list[Kms],
    tmp_path: Path,
    pki_dir: Path,
    database_url: str,
) -> None:
    env = {"COFFER_SEAL": mode, "COFFER_ROOT_ROTATION_BATCH": "2"}
    if mode == "pkcs11":
        env |= request.getfixturevalue("softhsm").env()
    kms = await start(stacks, tmp_path, pki_dir, database_url, **env)
    shares: list[str] = []
    if mode == "shamir":
        init = await kms.seal().OperatorInit(kms_pb2.OperatorInitRequest(key_shares=3, key_threshold=2))
        shares = list(init.shares)

    async def unseal() -> None:
        for share in shares[:2]:
            await kms.seal().OperatorUnseal(kms_pb2.OperatorUnsealRequest(share=share))

    blobs = await make_keys_and_blobs(kms, 10)
    old = (await kms.seal().OperatorStatus(kms_pb2.OperatorStatusRequest())).status.root_key_id
    await kms.close_channels()
    await kms.services.stop_kms()

    # the same kms as a process, told to stop (and wait) after 2 batches of 2 rows: then SIGKILL
    addr = f"127.0.0.1:{_free_port()}"
    kms.services.env["COFFER_KMS_ADDR"] = addr
    values = {**kms.services.env, "COFFER_DATABASE_URL": kms.services.dsns["kms"]}
    values |= {"COFFER_ROOT_ROTATION_STOP_AFTER": "2", "COFFER_LOG_FILE": str(tmp_path / "kms.log")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coffer.kms",
        env={**os.environ, **service_env("kms", values)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(
            lambda: kms.seal().OperatorStatus(kms_pb2.OperatorStatusRequest(), timeout=2),
            timeout=60,
            retry_on=(errors.Unavailable,),
        )
        await unseal()
        started = await kms.seal().OperatorRotateRoot(kms_pb2.OperatorRotateRootRequest())
        new = started.status.new_root_key_id
        assert started.status.rotation == "rotate-root" and new and new != old
        status = await eventually(
            lambda: kms.seal().OperatorStatus(kms_pb2.OperatorStatusRequest()),
            timeout=60,
            until=lambda r: r.status.rewrapped == 4,
        )
        assert status.status.rotation == "rotate-root"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await kms.close_channels()
    assert proc.returncode == -signal.SIGKILL

    # killed in the middle: rows under both roots, the rotation recorded, the new root kept beside the old
    assert await kms.root_ids_of_material() == {old, new}
    row = await kms.rotation_row()
    assert row is not None and row["rewrapped"] == 4 and row["new_root_key_id"] == new
    if mode == "file":
        assert load_root_key(kms.home / "keys" / "root.key").key_id == old
        assert load_root_key(kms.home / "keys" / "root.key.next").key_id == new

    # restarted (without the stop): serves at once with both roots, and finishes the rotation by itself
    kms.services.env["COFFER_KMS_ADDR"] = "127.0.0.1:0"
    runtime = await kms.services.start_kms()
    await unseal()  # a shamir kms resumes once unsealed
    await all_decrypt(kms, blobs)
    await eventually(kms.rotation_row, timeout=60, until=lambda r: r is None)
    await eventually(
        lambda: kms.seal().OperatorStatus(kms_pb2.OperatorStatusRequest()),
        timeout=30,
        until=lambda r: r.status.rotation == "" and r.status.root_key_id == new,
    )
    assert await kms.root_ids_of_material() == {new}
    if mode == "file":
        assert load_root_key(kms.home / "keys" / "root.key").key_id == new
        assert not (kms.home / "keys" / "root.key.next").exists()
    elif mode == "pkcs11":
        assert runtime.hsm is not None and await runtime.hsm.key_ids() == [new]
    else:
        conn = await kms.admin()
        try:
            assert await conn.fetchval("SELECT root_key_id FROM kms.seal") == new
        finally:
            await conn.close()
    await all_decrypt(kms, blobs)


# --- migrate-seal -------------------------------------------------------------------------------------------


async def test_migrate_seal_from_file_to_shamir_keeps_every_secret(
    stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    kms = await start(stacks, tmp_path, pki_dir, database_url)
    token = await kms.services.credential("user/admin")
    bob = await kms.services.credential("user/bob")
    await kms.services.start_gateway()
    endpoint = kms.services.env["COFFER_GATEWAY_ADDR"]
    names = [f"app/secret-{i}" for i in range(5)]
    async with AsyncCofferClient(endpoint, kms.services.ca_file, token) as client:
        for name in names:
            await client.create_secret(name=name, secret_string=f"value-of-{name}")
        # through the gateway, as an operator
        reply = await client.operator.call(
            "OperatorMigrateSeal", to_mode="shamir", key_shares=3, key_threshold=2, wait=True
        )
        shares = list(reply.shares)  # type: ignore[attr-defined]
        assert len(shares) == 3 and reply.status.mode == "shamir"  # type: ignore[attr-defined]
        for name in names:  # the running kms serves on, under the new root
            assert (await client.get_secret_value(secret_id=name)).secret_string == f"value-of-{name}"
        async with AsyncCofferClient(endpoint, kms.services.ca_file, bob) as not_operator:
            for op in ("OperatorMigrateSeal", "OperatorRotateRoot"):
                with pytest.raises(errors.AccessDenied, match=f"kms:{op}.*operators only"):
                    await not_operator.operator.call(op)
    assert (
        not (kms.home / "keys" / "root.key").exists() and not (kms.home / "keys" / "root.key.next").exists()
    )

    # the operator switches COFFER_SEAL to shamir and restarts: sealed until K shares
    await kms.services.stop_kms()
    kms.services.env["COFFER_SEAL"] = "shamir"
    await kms.services.start_kms()
    seal = kms.seal()
    for share in shares[:2]:
        status = (await seal.OperatorUnseal(kms_pb2.OperatorUnsealRequest(share=share))).status
    assert not status.sealed and status.mode == "shamir"
    unseal_key = shamir.combine([shamir.parse_share(s) for s in shares[:2]])
    conn = await kms.admin()
    try:
        encrypted = await conn.fetchval("SELECT encrypted_root FROM kms.seal")
    finally:
        await conn.close()
    root = aead.open_sealed(unseal_key, bytes(encrypted), aad=b"coffer/kms/seal/root-key/v1")
    assert await kms.root_ids_of_material() == {RootKey(root).key_id}
    async with AsyncCofferClient(endpoint, kms.services.ca_file, token) as client:
        for name in names:
            got = await eventually(
                functools.partial(client.get_secret_value, secret_id=name),
                timeout=15,
                retry_on=(errors.Unavailable,),
            )
            assert got.secret_string == f"value-of-{name}"
        await _assert_no_plaintext_keys(kms, {root, unseal_key}, [])
        # and its root rotates in the shamir mode now, through the gateway, under the same shares
        rotated = await client.operator.call("OperatorRotateRoot", wait=True)
        assert rotated.status.root_key_id != RootKey(root).key_id  # type: ignore[attr-defined]
        await client.put_secret_value(secret_id=names[0], secret_string="after-rotation")
        assert (await client.get_secret_value(secret_id=names[0])).secret_string == "after-rotation"
        for name in names[1:]:
            assert (await client.get_secret_value(secret_id=name)).secret_string == f"value-of-{name}"
    await kms.services.stop_kms()
    await kms.services.start_kms()
    for share in shares[1:]:
        status = (await kms.seal().OperatorUnseal(kms_pb2.OperatorUnsealRequest(share=share))).status
    assert not status.sealed and status.root_key_id == rotated.status.root_key_id  # type: ignore[attr-defined]


async def test_migrate_seal_from_file_to_pkcs11(
    softhsm: SoftHsm, stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    kms = await start(stacks, tmp_path, pki_dir, database_url, **softhsm.env())
    blobs = await make_keys_and_blobs(kms, 5)
    done = await kms.seal().OperatorMigrateSeal(
        kms_pb2.OperatorMigrateSealRequest(to_mode="pkcs11", wait=True)
    )
    new = done.status.root_key_id
    assert done.status.mode == "pkcs11" and new.startswith("hsm-") and not done.shares
    assert not (kms.home / "keys" / "root.key").exists()
    await all_decrypt(kms, blobs)
    await kms.services.stop_kms()
    kms.services.env["COFFER_SEAL"] = "pkcs11"
    await kms.services.start_kms()
    assert await kms.root_ids_of_material() == {new}
    await all_decrypt(kms, blobs)
    await _assert_no_plaintext_keys(kms, set(), blobs)


# --- canary -------------------------------------------------------------------------------------------------


async def _assert_no_plaintext_keys(kms: Kms, roots: set[bytes], blobs: list[tuple[bytes, bytes]]) -> None:
    """No file under COFFER_HOME and no row of the kms schema holds a root key or any CMK material in
    plaintext. The CMK material is recovered through the running kms's roots (only the test does so)."""
    runtime = kms.services.kms
    assert runtime is not None
    conn = await kms.admin()
    try:
        rows = await conn.fetch(
            "SELECT k.account_id, k.region, m.key_id, m.material_id, m.wrapped, m.root_key_id"
            " FROM kms.key_materials m JOIN kms.keys k ON k.key_id = m.key_id"
        )
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'kms'"
        )
        dump: list[str] = []
        for t in tables:
            dump.extend(
                r["row"] for r in await conn.fetch(f'SELECT t::text AS row FROM kms."{t["table_name"]}" t')
            )
    finally:
        await conn.close()
    materials: set[bytes] = set()
    for r in rows:
        binding = MaterialBinding(r["account_id"], r["region"], r["key_id"], r["material_id"])
        async with runtime.seal.using(r["root_key_id"]) as root:
            materials.add(await root.unwrap(bytes(r["wrapped"]), binding))
    assert rows and len(materials) == len(rows)
    text = "\n".join(dump).lower()
    files = [p for p in kms.home.rglob("*") if p.is_file()]
    contents = [p.read_bytes() for p in files]
    for secret in roots | materials:
        for form in (secret.hex(), base64.b64encode(secret).decode()):
            assert form.lower() not in text
        for data in contents:
            assert secret not in data and secret.hex().encode() not in data
    if blobs:
        assert all(plaintext.decode() not in text for _, plaintext in blobs)


# --- leftovers of a rotation's last step, finished at start -------------------------------------------------


async def test_file_rotation_leftovers_are_finished_at_start(
    stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    kms = await start(stacks, tmp_path, pki_dir, database_url)
    blobs = await make_keys_and_blobs(kms, 3)
    keys_dir = kms.home / "keys"
    old_bytes = (keys_dir / "root.key").read_bytes()
    # a successor written by a rotation that never got recorded: removed, the old root stays
    (keys_dir / "root.key.next").write_bytes(os.urandom(32))
    await kms.close_channels()
    await kms.services.stop_kms()
    await kms.services.start_kms()
    assert not (keys_dir / "root.key.next").exists() and (keys_dir / "root.key").read_bytes() == old_bytes
    done = await kms.seal().OperatorRotateRoot(kms_pb2.OperatorRotateRootRequest(wait=True))
    new = done.status.root_key_id
    new_bytes = (keys_dir / "root.key").read_bytes()
    await kms.close_channels()
    await kms.services.stop_kms()
    # as if the kms died after the rotation committed but before the new file replaced the old one
    (keys_dir / "root.key").write_bytes(old_bytes)
    (keys_dir / "root.key.next").write_bytes(new_bytes)
    await kms.services.start_kms()
    assert load_root_key(keys_dir / "root.key").key_id == new and not (keys_dir / "root.key.next").exists()
    await all_decrypt(kms, blobs)


async def test_pkcs11_rotation_leftovers_are_destroyed_at_start(
    softhsm: SoftHsm, stacks: list[Kms], tmp_path: Path, pki_dir: Path, database_url: str
) -> None:

    kms = await start(stacks, tmp_path, pki_dir, database_url, COFFER_SEAL="pkcs11", **softhsm.env())
    blobs = await make_keys_and_blobs(kms, 2)
    current = (await kms.seal().OperatorStatus(kms_pb2.OperatorStatusRequest())).status.root_key_id
    await kms.close_channels()
    await kms.services.stop_kms()
    # a key a rotation generated but never recorded (or an old one it did not get to destroy)
    hsm = Hsm(HsmConfig(module=DEFAULT_MODULE, token_label=TOKEN, pin=PIN, key_label=KEY_LABEL))
    try:
        orphan = await hsm.generate()
        assert sorted(await hsm.key_ids()) == sorted([current, orphan])
    finally:
        await hsm.aclose()
    runtime = await kms.services.start_kms()
    assert runtime.hsm is not None and await runtime.hsm.key_ids() == [current]
    await all_decrypt(kms, blobs)
