"""What every store ensures at start (idempotent): the root account ``000000000000`` with its ``admin`` user
(inline policy ``AdministratorAccess``: allow ``*`` on ``*``), the rotation service's identity (user
``coffer-rotation`` that may only assume role ``coffer-rotation``; the role may only read and stage secret
versions of secrets whose rotation is configured), and the access keys handed over by the deployment
(``COFFER_BOOTSTRAP_KEYS_FILE``, see :func:`read_bootstrap_keys`): inserted when absent, never replaced.

(Helper A1 writes the IAM admin API; this is the small bootstrap A2 needs, until A1's ``ensure_root_account``
replaces :func:`ensure_root_account` here.)
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from coffer import logs
from coffer.core.principal import ADMIN_POLICY_TEXT, ROOT_ACCOUNT
from coffer.principal_directory import IAM_CHANNEL

log = logs.get_logger("coffer.store.iam_bootstrap")

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
ADMIN_USER = "admin"
ROTATION_NAME = "coffer-rotation"
ROTATION_ACTIONS = (
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:ListSecretVersionIds",
)


def user_arn(name: str, account: str = ROOT_ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:user/{name}"


def role_arn(name: str, account: str = ROOT_ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


def _policy(*statements: dict[str, object]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, separators=(",", ":"))


ROTATION_USER_POLICY = _policy(
    {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn(ROTATION_NAME)}
)
ROTATION_TRUST_POLICY = _policy(
    {"Effect": "Allow", "Principal": {"AWS": user_arn(ROTATION_NAME)}, "Action": "sts:AssumeRole"}
)
ROTATION_ROLE_POLICY = _policy(
    {
        "Effect": "Allow",
        "Action": list(ROTATION_ACTIONS),
        "Resource": "*",
        "Condition": {"Null": {"secretsmanager:resource/AllowRotationLambdaArn": "false"}},
    },
    # GetRandomPassword names no secret (no resource to carry the condition key), and a custom rotation
    # looks its function up in ListRotationFunctions.
    {
        "Effect": "Allow",
        "Action": ["secretsmanager:GetRandomPassword", "secretsmanager:ListRotationFunctions"],
        "Resource": "*",
    },
)


def _unique_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_BASE32) for _ in range(17))


@dataclass(frozen=True, slots=True)
class BootstrapKey:
    """A user's access key to insert (``user`` the user's name in the root account)."""

    access_key_id: str
    signing_key: bytes
    user: str = ADMIN_USER


def read_bootstrap_keys(path: Path) -> list[BootstrapKey]:
    """``{"keys": [{"user": "admin", "access_key_id": "AKIA…", "signing_key": "<64 hex>"}, {"user":
    "coffer-rotation", ...}]}`` (a missing file: none). Role sessions (entries with a ``role``, written by
    older releases) are skipped: sessions come from STS AssumeRole only."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    out: list[BootstrapKey] = []
    for entry in doc.get("keys", []):
        if entry.get("role") is not None:
            log.warning("iam.bootstrap.session_skipped", access_key_id=entry.get("access_key_id"))
            continue
        out.append(
            BootstrapKey(
                access_key_id=entry["access_key_id"],
                signing_key=bytes.fromhex(entry["signing_key"]),
                user=entry.get("user") or ADMIN_USER,
            )
        )
    return out


async def _ensure_principal(
    conn: asyncpg.Connection,
    *,
    kind: str,
    name: str,
    trust_policy: str | None = None,
    account: str = ROOT_ACCOUNT,
) -> int:
    arn = user_arn(name, account) if kind == "user" else role_arn(name, account)
    row = await conn.fetchrow(
        "SELECT id FROM store.iam_principals WHERE account_id = $1 AND kind = $2 AND lower(name) = lower($3)",
        account,
        kind,
        name,
    )
    if row is not None:
        return int(row["id"])
    pid = await conn.fetchval(
        """INSERT INTO store.iam_principals (account_id, kind, name, unique_id, arn, trust_policy)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
        account,
        kind,
        name,
        _unique_id("AIDA" if kind == "user" else "AROA"),
        arn,
        trust_policy,
    )
    return int(pid)


async def _ensure_policy(
    conn: asyncpg.Connection, principal_id: int, name: str, document: str, *, current: bool = False
) -> None:
    """Insert the inline policy if absent; ``current``: also replace an older text (the rotation service's
    own policies follow the code that needs them, release after release)."""
    conflict = (
        "DO UPDATE SET document = EXCLUDED.document, updated_at = now()"
        " WHERE store.iam_policies.document IS DISTINCT FROM EXCLUDED.document"
        if current
        else "DO NOTHING"
    )
    await conn.execute(
        "INSERT INTO store.iam_policies (principal_id, policy_name, document) VALUES ($1, $2, $3)"
        f" ON CONFLICT (principal_id, policy_name) {conflict}",
        principal_id,
        name,
        document,
    )


async def ensure_root_account(pool: asyncpg.Pool, keys: Sequence[BootstrapKey] = ()) -> None:
    """Create what is missing of the root account, its admin, the rotation identity and ``keys``."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('coffer-iam-bootstrap'))")
        await conn.execute(
            "INSERT INTO store.iam_accounts (account_id, name) VALUES ($1, 'root') ON CONFLICT DO NOTHING",
            ROOT_ACCOUNT,
        )
        admin = await _ensure_principal(conn, kind="user", name=ADMIN_USER)
        await _ensure_policy(conn, admin, "AdministratorAccess", ADMIN_POLICY_TEXT)
        rot_user = await _ensure_principal(conn, kind="user", name=ROTATION_NAME)
        await _ensure_policy(conn, rot_user, "AssumeRotationRole", ROTATION_USER_POLICY, current=True)
        rot_role = await _ensure_principal(
            conn, kind="role", name=ROTATION_NAME, trust_policy=ROTATION_TRUST_POLICY
        )
        await _ensure_policy(conn, rot_role, "RotationAccess", ROTATION_ROLE_POLICY, current=True)
        added: list[str] = []
        for key in keys:
            owner = await _ensure_principal(conn, kind="user", name=key.user)
            status = await conn.execute(
                """INSERT INTO store.iam_access_keys (access_key_id, principal_id, signing_key)
                   VALUES ($1, $2, $3) ON CONFLICT (access_key_id) DO NOTHING""",
                key.access_key_id,
                owner,
                key.signing_key,
            )
            if status.endswith(" 1"):
                added.append(key.access_key_id)
        if added:
            await conn.execute(
                "SELECT pg_notify($1, $2)",
                IAM_CHANNEL,
                json.dumps({"access_key_ids": added, "principal_arns": []}),
            )
    log.info("iam.bootstrap", keys_added=len(added))


async def issue_user_key(
    conn: asyncpg.Connection,
    name: str,
    *,
    policy: str | None = ADMIN_POLICY_TEXT,
    account: str = ROOT_ACCOUNT,
) -> tuple[str, str]:
    """Create user ``name`` (with inline policy ``policy`` when given) if missing and a new access key of
    it; returns ``(access key id, secret access key)``. For tests and bootstrap tooling (A1's IAM API is the
    way for users)."""
    from coffer.crypto.access_keys import derive_signing_key, new_access_key_id, new_secret_access_key

    akid, secret = new_access_key_id(), new_secret_access_key()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO store.iam_accounts (account_id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING",
            account,
        )
        pid = await _ensure_principal(conn, kind="user", name=name, account=account)
        if policy is not None:
            await _ensure_policy(conn, pid, "Inline", policy)
        await conn.execute(
            """INSERT INTO store.iam_access_keys (access_key_id, principal_id, signing_key)
               VALUES ($1, $2, $3)""",
            akid,
            pid,
            derive_signing_key(secret),
        )
        await conn.execute(
            "SELECT pg_notify($1, $2)",
            IAM_CHANNEL,
            json.dumps({"access_key_ids": [akid], "principal_arns": []}),
        )
    return akid, secret


def bootstrap_entry(key: BootstrapKey) -> dict[str, str]:
    """``key`` as an entry of the bootstrap keys file."""
    return {"user": key.user, "access_key_id": key.access_key_id, "signing_key": key.signing_key.hex()}
