"""At rest: values are bound to their secret and version (tampering or moving a ciphertext fails to decrypt),
and no plaintext value reaches any file of the PostgreSQL data directory or any log line."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog
from structlog.testing import capture_logs

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.core import errors
from coffer.logs import redact_processor

if TYPE_CHECKING:
    from coffer.embedded import EmbeddedPostgres
    from tests.integration.store.conftest import StoreStack


def token() -> str:
    return str(uuid.uuid4())


async def two_versions(stack: StoreStack) -> tuple[str, str, int]:
    s = stack.store
    t1, t2 = token(), token()
    await s.CreateSecret(
        pb.CreateSecretRequest(name="target", client_request_token=t1, secret_string="first")
    )
    await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="target", client_request_token=t2, secret_string="second")
    )
    secret_id = await stack.db.fetchval("SELECT id FROM store.secrets WHERE name = 'target'")
    return t1, t2, int(secret_id)


async def test_a_flipped_ciphertext_byte_fails_to_decrypt(stack: StoreStack) -> None:
    t1, t2, sid = await two_versions(stack)
    assert (
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="target"))
    ).secret_string == "second"
    blob = bytearray(
        await stack.db.fetchval(
            "SELECT ciphertext FROM store.versions WHERE secret_id=$1 AND version_id=$2", sid, t2
        )
    )
    blob[len(blob) // 2] ^= 0x01
    await stack.db.execute(
        "UPDATE store.versions SET ciphertext=$3 WHERE secret_id=$1 AND version_id=$2", sid, t2, bytes(blob)
    )
    with pytest.raises(errors.DecryptionFailure) as info:
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="target"))
    assert info.value.code == "DecryptionFailure"
    assert "second" not in info.value.message
    # the other version is untouched
    assert (
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="target", version_id=t1))
    ).secret_string == "first"


async def test_a_flipped_wrapped_key_byte_fails_to_decrypt(stack: StoreStack) -> None:
    _, t2, sid = await two_versions(stack)
    wrapped = bytearray(
        await stack.db.fetchval(
            "SELECT wrapped_key FROM store.versions WHERE secret_id=$1 AND version_id=$2", sid, t2
        )
    )
    wrapped[-1] ^= 0x80
    await stack.db.execute(
        "UPDATE store.versions SET wrapped_key=$3 WHERE secret_id=$1 AND version_id=$2",
        sid,
        t2,
        bytes(wrapped),
    )
    with pytest.raises(errors.DecryptionFailure):
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="target"))


async def test_a_ciphertext_moved_to_another_version_fails_to_decrypt(stack: StoreStack) -> None:
    t1, t2, sid = await two_versions(stack)
    # copy version 1's ciphertext and wrapped data key over version 2 (the current one)
    await stack.db.execute(
        """UPDATE store.versions v2 SET ciphertext = v1.ciphertext, wrapped_key = v1.wrapped_key
           FROM store.versions v1
           WHERE v1.secret_id = $1 AND v1.version_id = $2 AND v2.secret_id = $1 AND v2.version_id = $3""",
        sid,
        t1,
        t2,
    )
    with pytest.raises(errors.DecryptionFailure):
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="target"))
    assert (
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="target", version_id=t1))
    ).secret_string == "first"


async def test_a_ciphertext_moved_to_another_secret_fails_to_decrypt(stack: StoreStack) -> None:
    t1, _, sid = await two_versions(stack)
    await stack.store.CreateSecret(
        pb.CreateSecretRequest(name="other", client_request_token=t1, secret_string="other")
    )
    other = await stack.db.fetchval("SELECT id FROM store.secrets WHERE name = 'other'")
    await stack.db.execute(
        """UPDATE store.versions dst SET ciphertext = src.ciphertext, wrapped_key = src.wrapped_key
           FROM store.versions src
           WHERE src.secret_id = $1 AND src.version_id = $3 AND dst.secret_id = $2 AND dst.version_id = $3""",
        sid,
        other,
        t1,
    )
    with pytest.raises(errors.DecryptionFailure):
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="other"))


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits: list[str] = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return hits


async def test_canary_values_never_reach_disk_or_logs(
    stack: StoreStack, pg_server: EmbeddedPostgres, capfd: pytest.CaptureFixture[str]
) -> None:
    canary = f"CANARY-{secrets.token_hex(16)}"
    marker = f"DESCRIPTION-{secrets.token_hex(16)}"  # metadata is stored in clear: the positive control
    binary_canary = f"BINCANARY-{secrets.token_hex(16)}".encode()
    s = stack.store
    with capture_logs(processors=[structlog.contextvars.merge_contextvars, redact_processor]) as entries:
        t = token()
        create = pb.CreateSecretRequest(
            name="canary", client_request_token=t, secret_string=canary, description=marker
        )
        await s.CreateSecret(create)
        await s.CreateSecret(create)  # an idempotent retry decrypts the stored value to compare it
        await s.PutSecretValue(
            pb.PutSecretValueRequest(
                secret_id="canary", client_request_token=token(), secret_binary=binary_canary
            )
        )
        await s.UpdateSecret(
            pb.UpdateSecretRequest(
                secret_id="canary", client_request_token=token(), secret_string=canary + "-2"
            )
        )
        assert (
            await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="canary"))
        ).secret_string == canary + "-2"
        got = await s.BatchGetSecretValue(pb.BatchGetSecretValueRequest(secret_id_list=["canary"]))
        assert got.secret_values[0].secret_string == canary + "-2"
        # failures must not echo the value either
        with pytest.raises(errors.AlreadyExists):
            await s.PutSecretValue(
                pb.PutSecretValueRequest(
                    secret_id="canary", client_request_token=t, secret_string=canary + "-x"
                )
            )
        with pytest.raises(errors.Validation) as too_big:
            await s.PutSecretValue(
                pb.PutSecretValueRequest(
                    secret_id="canary", client_request_token=token(), secret_string=canary * 3000
                )
            )
        assert canary not in too_big.value.message
    await stack.db.execute("CHECKPOINT")
    needles = [canary.encode(), binary_canary, canary.encode("utf-16-le")]
    assert files_containing(pg_server.data_dir, needles) == []
    assert files_containing(pg_server.data_dir, [marker.encode()]) != []  # the scan does see stored text
    assert len(entries) > 5  # the store did log these calls ...
    rendered = json.dumps(entries, default=repr)
    assert canary not in rendered and binary_canary.decode() not in rendered  # ... but never a value
    out, err = capfd.readouterr()
    assert canary not in out + err and binary_canary.decode() not in out + err
