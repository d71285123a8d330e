"""Secret access keys kept for AWS SigV4 (issue 10), on the real stack (kms → store → gateway, PostgreSQL):
sealed at rest, opened for the gateway's ResolveAccessKey only, bound to their access key id."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from coffer.api.iam.v1 import directory_pb2, directory_pb2_grpc
from coffer.crypto.access_keys import derive_signing_key
from coffer.principal_directory import from_proto
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles
from coffer.testing.stack import ADMIN_CREDENTIALS_FILE

from .conftest import IamStack

ROOT = "000000000000"


async def _resolve(
    stack: IamStack, identity: str, access_key_id: str
) -> directory_pb2.ResolveAccessKeyResponse:
    """ResolveAccessKey on the store, called with ``identity``'s service certificate."""
    channel = secure_channel(
        f"127.0.0.1:{stack.store.port}",
        TlsFiles.for_identity(stack.services.pki_dir, identity),
        server_name="store",
    )
    try:
        directory = directory_pb2_grpc.PrincipalDirectoryServiceStub(channel)
        answer: directory_pb2.ResolveAccessKeyResponse = await directory.ResolveAccessKey(
            directory_pb2.ResolveAccessKeyRequest(access_key_id=access_key_id), timeout=10
        )
        return answer
    finally:
        await channel.close()


async def _row(stack: IamStack, access_key_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(stack.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT secret_ciphertext, secret_wrapped_key, signing_key FROM store.iam_access_keys"
            " WHERE access_key_id = $1",
            access_key_id,
        )
    finally:
        await conn.close()
    assert row is not None
    return row


async def test_a_created_keys_secret_is_sealed_and_only_the_gateway_gets_it(iam_stack: IamStack) -> None:
    iam = iam_stack.admin.iam
    await iam.create_user(user_name="sigv4")
    key = (await iam.create_access_key(user_name="sigv4")).access_key
    secret = key.secret_access_key

    row = await _row(iam_stack, key.access_key_id)
    assert row["secret_ciphertext"] is not None and row["secret_wrapped_key"] is not None
    conn = await asyncpg.connect(iam_stack.database_url)
    try:
        # The plaintext (and its usual encodings) appears in no column of the table.
        dump = await conn.fetchval("SELECT string_agg(t::text, E'\\n') FROM store.iam_access_keys t")
    finally:
        await conn.close()
    assert secret not in dump and secret.encode().hex() not in dump

    gateway = await _resolve(iam_stack, "gateway", key.access_key_id)
    assert gateway.secret_access_key == secret
    record = from_proto(gateway)
    assert record.secret_access_key == secret and secret not in repr(record)
    kms = await _resolve(iam_stack, "kms", key.access_key_id)
    assert kms.secret_access_key == "" and kms.signing_key == b""
    assert from_proto(kms).secret_access_key is None


async def test_session_keys_from_assume_role_get_their_secret(iam_stack: IamStack) -> None:
    iam, sts = iam_stack.admin.iam, iam_stack.admin.sts
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ROOT}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    await iam.create_role(role_name="sigv4-role", assume_role_policy_document=trust)
    role_arn = f"arn:aws:iam::{ROOT}:role/sigv4-role"
    creds = (await sts.assume_role(role_arn=role_arn, role_session_name="sigv4-session")).credentials
    assert creds.access_key_id.startswith("ASIA")
    assert (await _row(iam_stack, creds.access_key_id))["secret_ciphertext"] is not None
    answer = await _resolve(iam_stack, "gateway", creds.access_key_id)
    assert answer.secret_access_key == creds.secret_access_key


def _bootstrap_files(bootstrap: Path) -> tuple[str, dict[str, str]]:
    """The bootstrap keys file's text, and the admin credentials file the stack wrote beside it."""
    written = json.loads((bootstrap.parent / ADMIN_CREDENTIALS_FILE).read_text(encoding="utf-8"))
    return bootstrap.read_text(encoding="utf-8"), written


async def test_the_bootstrap_admin_key_gets_its_secret_from_the_stacks_credentials_file(
    iam_stack: IamStack,
) -> None:
    task = iam_stack.store.bootstrap_sealing
    assert task is not None
    await task  # the kms is up: the first round seals it
    bootstrap_text, written = _bootstrap_files(Path(iam_stack.services.env["COFFER_BOOTSTRAP_KEYS_FILE"]))
    assert "secret_access_key" not in bootstrap_text  # only the credentials file's path is there
    assert written["access_key_id"] == iam_stack.tokens["user/admin"].access_key_id
    answer = await _resolve(iam_stack, "gateway", written["access_key_id"])
    assert answer.secret_access_key == written["secret_access_key"]
    assert bytes(answer.signing_key) == derive_signing_key(written["secret_access_key"])


async def test_a_sealed_secret_copied_onto_another_key_does_not_open(iam_stack: IamStack) -> None:
    iam = iam_stack.admin.iam
    await iam.create_user(user_name="victim")
    await iam.create_user(user_name="thief")
    victim = (await iam.create_access_key(user_name="victim")).access_key
    thief = (await iam.create_access_key(user_name="thief")).access_key
    assert (await _resolve(iam_stack, "gateway", thief.access_key_id)).secret_access_key == (
        thief.secret_access_key
    )

    row = await _row(iam_stack, victim.access_key_id)
    conn = await asyncpg.connect(iam_stack.database_url)
    try:
        await conn.execute(
            "UPDATE store.iam_access_keys SET secret_ciphertext = $2, secret_wrapped_key = $3"
            " WHERE access_key_id = $1",
            thief.access_key_id,
            row["secret_ciphertext"],
            row["secret_wrapped_key"],
        )
    finally:
        await conn.close()
    answer = await _resolve(iam_stack, "gateway", thief.access_key_id)
    # The victim's blob on the thief's row opens to nothing: neither secret is handed out.
    assert answer.secret_access_key == ""
    assert answer.access_key_id == thief.access_key_id and len(answer.signing_key) == 32
