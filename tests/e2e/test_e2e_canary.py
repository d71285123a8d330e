"""A secret value written through the real CLI is found in no file the deployment writes: PostgreSQL's
data directory (after CHECKPOINT), Redis's data directory (after SAVE), the logs, COFFER_HOME. A tag value
written in the same call IS found in PostgreSQL, which proves the search would have found a leaked value."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from .conftest import run_cli

pytestmark = pytest.mark.e2e

SM = "secretsmanager"
CHUNK = 1 << 20


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` whose raw bytes contain any needle (read in overlapping chunks)."""
    overlap = max(len(n) for n in needles) - 1
    hits: list[str] = []
    for dirpath, _dirs, names in os.walk(root):
        for fname in names:
            path = Path(dirpath) / fname
            try:
                with open(path, "rb") as fh:
                    carry = b""
                    while chunk := fh.read(CHUNK):
                        window = carry + chunk
                        if any(n in window for n in needles):
                            hits.append(str(path))
                            break
                        carry = window[-overlap:] if overlap else b""
            except (FileNotFoundError, IsADirectoryError, PermissionError, OSError):
                continue  # vanished temp files, sockets
    return hits


def encodings(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode()]


async def _checkpoint(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def test_secret_values_rest_nowhere_in_plaintext(e2e: Any) -> None:
    canary = f"canary-{secrets.token_hex(16)}"
    canary_2 = f"canary-{secrets.token_hex(16)}"
    control = f"control-{secrets.token_hex(16)}"
    name = f"e2e-canary-{uuid.uuid4().hex[:8]}"

    e2e.cli_json(
        SM, "create-secret", "--name", name, "--secret-string", canary, "--tags", f"Key=probe,Value={control}"
    )
    e2e.cli_json(SM, "put-secret-value", "--secret-id", name, "--secret-string", canary_2)
    assert e2e.cli_json(SM, "get-secret-value", "--secret-id", name)["SecretString"] == canary_2
    previous = e2e.cli_json(SM, "get-secret-value", "--secret-id", name, "--version-stage", "AWSPREVIOUS")
    assert previous["SecretString"] == canary

    asyncio.run(_checkpoint(e2e.database_url))
    client = redis.Redis.from_url(e2e.deployment.redis_url)
    try:
        client.save()
    finally:
        client.close()

    # Control first: the search finds what really is stored in plaintext (tags are metadata, not secrets).
    assert files_containing(e2e.pg_data_dir, [control.encode()]), "control tag value not found in PostgreSQL"

    needles = encodings(canary) + encodings(canary_2)
    for root in (e2e.pg_data_dir, e2e.redis_data_dir, e2e.log_dir, e2e.home):
        assert files_containing(root, needles) == [], f"a secret value was found in plaintext under {root}"
    # The logs were written at all (so their silence about the value means something).
    assert any(p.stat().st_size > 0 for p in e2e.log_dir.glob("*.log"))


def test_secret_access_keys_rest_nowhere_in_plaintext(e2e: Any) -> None:
    """Issue 10: the store now keeps every access key's secret (sealed, for AWS SigV4). A key created through
    the CLI, and used once so the gateway resolved it (and the store opened the secret for it), leaves its
    secret in no file: PostgreSQL, Redis, the logs, COFFER_HOME. Its access key id (metadata) IS in
    PostgreSQL: the control."""
    name = f"e2e-canary-key-{uuid.uuid4().hex[:8]}"
    e2e.cli_json("iam", "create-user", "--user-name", name)
    key = e2e.cli_json("iam", "create-access-key", "--user-name", name)["AccessKey"]
    secret, akid = key["SecretAccessKey"], key["AccessKeyId"]
    # Resolved by the gateway (a call signed with the key; whether it is allowed does not matter here).
    profile = Path(e2e.profile_path)
    doc = {**json.loads(profile.read_text()), "access_key_id": akid, "secret_access_key": secret}
    other = profile.parent / f"{name}.json"  # removed before the search (it holds the secret on purpose)
    other.write_text(json.dumps(doc))
    try:
        assert run_cli(other, "sts", "get-caller-identity").returncode == 0
    finally:
        other.unlink()
    asyncio.run(_checkpoint(e2e.database_url))
    client = redis.Redis.from_url(e2e.deployment.redis_url)
    try:
        client.save()
    finally:
        client.close()

    assert files_containing(e2e.pg_data_dir, [akid.encode()]), "control access key id not found in PostgreSQL"
    needles = encodings(secret)
    for root in (e2e.pg_data_dir, e2e.redis_data_dir, e2e.log_dir, e2e.home):
        assert files_containing(root, needles) == [], (
            f"a secret access key was found in plaintext under {root}"
        )
