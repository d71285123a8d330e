"""Backup, wipe, restore, end to end (issue 11): a deployment started like ``make run`` gets secrets of every
kind (string, binary, several versions and labels, a resource policy, tags, a customer KMS key with an alias,
one secret scheduled for deletion) and audit events; ``coffer admin backup --include-root-key`` snapshots
it; the services stop, the database and its roles are dropped and the root key and audit signing key files
removed; a tampered
copy of the backup and a wrong passphrase are refused without touching anything; ``coffer admin restore``
brings it back; the services start again and every secret, version, label, value, policy, tag, key and
alias reads back as before, and ``coffer audit verify`` still passes over the restored chain. No value
(and not the passphrase) appears in the backup's files, compressed or not."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest
from botocore.config import Config

from coffer import dbroles
from coffer.testing.wait import eventually_sync

from .conftest import E2E

pytestmark = pytest.mark.e2e

PASSPHRASE = "correct horse battery staple, backup edition"


def _boto(e2e: E2E, service: str) -> Any:
    c = e2e.admin_credentials
    return boto3.session.Session().client(
        service,
        endpoint_url=e2e.aws_endpoint_url,
        verify=str(e2e.ca_file),
        region_name=e2e.settings.region,
        aws_access_key_id=c.access_key_id,
        aws_secret_access_key=c.secret_access_key,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
    )


async def _wipe(admin_url: str, database: str) -> None:
    """Drop the deployment's database and its roles, then create the database again, empty."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        for service in dbroles.SCHEMAS:
            await conn.execute(f'DROP ROLE IF EXISTS "{dbroles.role_name(database, service)}"')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def _table_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname IN ('kms', 'store')",
            )
        )
    finally:
        await conn.close()


def _snapshot(sm: Any, kms: Any, names: list[str], key_id: str, blob: bytes) -> dict[str, Any]:
    """Everything a user can read about the secrets and the key, comparable before and after."""
    state: dict[str, Any] = {"secrets": {}}
    for name in names:
        described = sm.describe_secret(SecretId=name)
        versions = described["VersionIdsToStages"]
        values = {}
        for version_id in versions if "DeletedDate" not in described else ():  # not readable then
            got = sm.get_secret_value(SecretId=name, VersionId=version_id)
            values[version_id] = got.get("SecretString", got.get("SecretBinary"))
        policy = sm.get_resource_policy(SecretId=name).get("ResourcePolicy")
        state["secrets"][name] = {
            "arn": described["ARN"],
            "stages": versions,
            "values": values,
            "tags": sorted((t["Key"], t["Value"]) for t in described.get("Tags", [])),
            "kms_key": described.get("KmsKeyId"),
            "deleted": "DeletedDate" in described,
            "description": described.get("Description"),
            "policy": json.loads(policy) if policy else None,
        }
    key = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    state["key"] = {k: key[k] for k in ("KeyId", "Arn", "Description", "KeyState", "Enabled")}
    state["key_policy"] = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    state["aliases"] = sorted(a["AliasName"] for a in kms.list_aliases()["Aliases"] if "TargetKeyId" in a)
    state["decrypted"] = kms.decrypt(CiphertextBlob=blob)["Plaintext"]
    return state


def _backup_bytes(directory: Path) -> list[tuple[Path, bytes]]:
    """Every file of the backup, as stored and (for the gzip ones) decompressed."""
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        out.append((path, raw))
        if path.suffix == ".gz":
            out.append((path, gzip.decompress(raw)))
    return out


def test_backup_wipe_restore_brings_every_secret_back(
    e2e_factory: Any, e2e_tools: Any, tmp_path: Path
) -> None:
    e2e: E2E = e2e_factory()
    sm, kms = _boto(e2e, "secretsmanager"), _boto(e2e, "kms")
    # the admin's access key works moments after the start
    eventually_sync(lambda: sm.list_secrets(), timeout=30, interval=0.5, retry_on=(Exception,))

    run = uuid.uuid4().hex[:10]
    canaries = {
        "v1": f"canary-string-one-{run}",
        "v2": f"canary-string-two-{run}",
        "staged": f"canary-string-staged-{run}",
        "policy": f"canary-policy-secret-{run}",
        "deleted": f"canary-deleted-{run}",
    }
    binary = f"canary-binary-{run}".encode() + bytes(range(256))
    kms_plaintext = f"canary-kms-plaintext-{run}".encode()

    key_id = kms.create_key(Description="backup e2e", Tags=[{"TagKey": "team", "TagValue": "vault"}])[
        "KeyMetadata"
    ]["KeyId"]
    kms.create_alias(AliasName=f"alias/backup-{run}", TargetKeyId=key_id)
    blob = kms.encrypt(KeyId=key_id, Plaintext=kms_plaintext)["CiphertextBlob"]

    names = [f"bk/{run}/string", f"bk/{run}/binary", f"bk/{run}/policy", f"bk/{run}/deleted"]
    sm.create_secret(
        Name=names[0],
        SecretString=canaries["v1"],
        Description="three versions",
        KmsKeyId=key_id,
        Tags=[{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "payments"}],
    )
    sm.put_secret_value(SecretId=names[0], SecretString=canaries["v2"])
    sm.put_secret_value(SecretId=names[0], SecretString=canaries["staged"], VersionStages=["STAGED"])
    sm.create_secret(Name=names[1], SecretBinary=binary)
    arn = sm.create_secret(Name=names[2], SecretString=canaries["policy"])["ARN"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{e2e.settings.account_id}:root"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
            }
        ],
    }
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=json.dumps(policy))
    sm.create_secret(Name=names[3], SecretString=canaries["deleted"])
    sm.delete_secret(SecretId=names[3], RecoveryWindowInDays=7)

    before = _snapshot(sm, kms, names, key_id, blob)
    assert set(before["secrets"][names[0]]["values"].values()) == {
        canaries["v1"],
        canaries["v2"],
        canaries["staged"],
    }
    assert before["secrets"][names[1]]["values"] == {v: binary for v in before["secrets"][names[1]]["stages"]}
    verified = e2e.cli("audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout + verified.stderr
    events_before = int(verified.stdout.split()[1])
    assert events_before > 10

    # ---- backup (the services keep running: the snapshot is consistent by itself)
    backup = tmp_path / "backup"
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    where = ["--database-url", e2e.database_url, "--home", str(e2e.home)]
    made = e2e.cli(
        "admin", "backup", "--to", str(backup), *where, "--include-root-key",
        "--passphrase-file", str(passphrase_file),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "root key included" in made.stdout
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["region"] == e2e.settings.region and manifest["root_keys"]
    assert manifest["migrations"]["store"] and manifest["migrations"]["kms"]
    rows = {f"{t['schema']}.{t['name']}": t["rows"] for t in manifest["tables"]}
    assert rows["store.secrets"] >= 4 and rows["store.versions"] >= 6 and rows["kms.keys"] >= 2
    assert rows["store.audit_events"] >= events_before

    # No value, no KMS plaintext, no root key and not the passphrase, in any file.
    root_key = e2e.settings.root_key_file.read_bytes()
    audit_key_file = e2e.settings.pki_dir / "audit-signing.key"
    audit_key = audit_key_file.read_bytes()
    assert [k["name"] for k in manifest["root_keys"]] == ["root.key", "audit-signing.key"]
    needles = [c.encode() for c in canaries.values()] + [binary[:40], kms_plaintext, PASSPHRASE.encode()]
    needles += [binary[:40].hex().encode(), root_key, root_key.hex().encode(), audit_key.splitlines()[1]]
    for path, content in _backup_bytes(backup):
        for needle in needles:
            assert needle not in content, f"{needle!r} found in {path}"

    # ---- wipe: stop the services, drop the database and its roles, remove the root and audit keys
    e2e.deployment.stop_services()
    database = dbroles.database_of(e2e.database_url)
    asyncio.run(_wipe(e2e_tools.pg_server.url(), database))
    e2e.settings.root_key_file.unlink()
    audit_key_file.unlink()

    # ---- refused: a tampered copy, a wrong passphrase (nothing is touched)
    tampered = tmp_path / "tampered"
    shutil.copytree(backup, tampered)
    victim = tampered / "data" / "store.versions.copy.gz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    refused = e2e.cli(
        "admin", "restore", "--from", str(tampered), *where, "--passphrase-file", str(passphrase_file)
    )
    assert refused.returncode == 1
    assert "data/store.versions.copy.gz" in refused.stderr and "changed" in refused.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    refused = e2e.cli("admin", "restore", "--from", str(backup), *where, "--passphrase-file", str(wrong))
    assert refused.returncode == 1 and "passphrase is wrong" in refused.stderr, refused.stderr
    assert asyncio.run(_table_count(e2e.database_url)) == 0
    assert not e2e.settings.root_key_file.exists()

    # ---- restore
    restored = e2e.cli(
        "admin", "restore", "--from", str(backup), *where, "--passphrase-file", str(passphrase_file)
    )
    assert restored.returncode == 0, restored.stderr
    assert e2e.settings.root_key_file.read_bytes() == root_key
    assert audit_key_file.read_bytes() == audit_key
    again = e2e.cli("admin", "restore", "--from", str(backup), *where, "--no-root-key")
    assert again.returncode == 1 and "is not empty" in again.stderr and "--force" in again.stderr

    e2e.deployment.start_services()
    after = eventually_sync(
        lambda: _snapshot(sm, kms, names, key_id, blob), timeout=30, interval=0.5, retry_on=(Exception,)
    )
    assert after == before
    assert after["decrypted"] == kms_plaintext
    verified = e2e.cli("audit", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout + verified.stderr
    assert int(verified.stdout.split()[1]) >= events_before
    # a restore while the services run is refused, --force or not
    running = e2e.cli("admin", "restore", "--from", str(backup), *where, "--force", "--no-root-key")
    assert running.returncode == 1 and "the services are still connected" in running.stderr, running.stderr
    # the secret scheduled for deletion is still scheduled, and comes back with its value
    sm.restore_secret(SecretId=names[3])
    assert sm.get_secret_value(SecretId=names[3])["SecretString"] == canaries["deleted"]
    # and it keeps working: a new version on a restored secret
    sm.put_secret_value(SecretId=names[0], SecretString="after-restore")
    assert sm.get_secret_value(SecretId=names[0])["SecretString"] == "after-restore"
