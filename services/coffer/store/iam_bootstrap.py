"""What every store ensures at start (idempotent): the root account ``000000000000`` with its ``admin`` user
(inline policy ``AdministratorAccess``: allow ``*`` on ``*``), the rotation service's identity (user
``coffer-rotation`` that may only assume role ``coffer-rotation``; the role may only read and stage secret
versions of secrets whose rotation is configured), and the access keys handed over by the deployment
(``COFFER_BOOTSTRAP_KEYS_FILE``, see :func:`read_bootstrap_keys`): inserted when absent, never replaced.

The bootstrap keys' secrets (for AWS SigV4, issue 10) are sealed by :func:`seal_bootstrap_secrets` once the
kms answers: the rows are inserted at once, without waiting for the kms (which may be sealed until an
operator unseals it, and itself resolves its callers through this store), so Coffer's own signing works from
the start; the AWS endpoint answers UnrecognizedClientException for such a key until its secret is sealed.

(Helper A1 writes the IAM admin API; this is the small bootstrap A2 needs, until A1's ``ensure_root_account``
replaces :func:`ensure_root_account` here.)
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from coffer import logs
from coffer.core import errors
from coffer.core.principal import ADMIN_POLICY_TEXT, ROOT_ACCOUNT
from coffer.crypto.access_keys import derive_signing_key
from coffer.principal_directory import IAM_CHANNEL
from coffer.store.access_key_secrets import AccessKeySecrets

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
    """A user's access key to insert (``user`` the user's name in the root account). ``credentials_file``:
    the 0600 JSON file the deployment already keeps the key in (the admin's profile,
    ``rotation-credentials.json``), whose ``secret_access_key`` the store seals into the key's row, so the
    bootstrap file names the secret without holding another plaintext copy of it; ``secret_access_key``:
    the secret read from there (never logged, never written back)."""

    access_key_id: str
    signing_key: bytes
    user: str = ADMIN_USER
    credentials_file: str | None = None
    secret_access_key: str | None = field(default=None, repr=False, compare=False)


def _secret_in(path: str, access_key_id: str, signing_key: bytes) -> str | None:
    """The secret of ``access_key_id`` in the credentials file ``path``, if it is there and derives
    ``signing_key``."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("iam.bootstrap.credentials_unreadable", path=path, error=type(exc).__name__)
        return None
    secret = doc.get("secret_access_key") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("access_key_id") != access_key_id
        or not isinstance(secret, str)
        or derive_signing_key(secret) != signing_key
    ):
        log.warning("iam.bootstrap.credentials_mismatch", path=path, access_key_id=access_key_id)
        return None
    return secret


def read_bootstrap_keys(path: Path) -> list[BootstrapKey]:
    """``{"keys": [{"user": "admin", "access_key_id": "AKIA…", "signing_key": "<64 hex>",
    "credentials_file": "/…/profile.json"}, {"user": "coffer-rotation", ...}]}`` (a missing file: none;
    ``credentials_file`` optional: the secret is read from it, and left out with a warning when that file
    does not hold this key with a secret that derives ``signing_key``). Role
    sessions (entries with a ``role``, written by older releases) are skipped: sessions come from STS
    AssumeRole only."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    out: list[BootstrapKey] = []
    for entry in doc.get("keys", []):
        if entry.get("role") is not None:
            log.warning("iam.bootstrap.session_skipped", access_key_id=entry.get("access_key_id"))
            continue
        akid, signing_key = entry["access_key_id"], bytes.fromhex(entry["signing_key"])
        source = entry.get("credentials_file")
        out.append(
            BootstrapKey(
                access_key_id=akid,
                signing_key=signing_key,
                user=entry.get("user") or ADMIN_USER,
                credentials_file=source,
                secret_access_key=_secret_in(source, akid, signing_key) if source else None,
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


async def seal_bootstrap_secrets(
    pool: asyncpg.Pool, keys: Sequence[BootstrapKey], secrets_: AccessKeySecrets
) -> tuple[list[str], list[str]]:
    """Seal the secret of each bootstrap key whose row has none yet (and whose signing key is the file's: a
    row rotated away from it is left alone). Returns the access key ids sealed now and those still waiting
    for their secret (credentials file not written yet or unreadable); KMS failures raise
    (:func:`keep_sealing_bootstrap_secrets` retries)."""
    sealed_now: list[str] = []
    waiting: list[str] = []
    for key in keys:
        if key.credentials_file is None and key.secret_access_key is None:
            continue
        missing = await pool.fetchval(
            "SELECT secret_ciphertext IS NULL FROM store.iam_access_keys"
            " WHERE access_key_id = $1 AND signing_key = $2",
            key.access_key_id,
            key.signing_key,
        )
        if not missing:
            continue
        if key.secret_access_key is None:
            waiting.append(key.access_key_id)
            continue
        sealed = await secrets_.seal(key.access_key_id, key.secret_access_key)
        async with pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """UPDATE store.iam_access_keys SET secret_ciphertext = $3, secret_wrapped_key = $4
                    WHERE access_key_id = $1 AND signing_key = $2 AND secret_ciphertext IS NULL""",
                key.access_key_id,
                key.signing_key,
                sealed.ciphertext,
                sealed.wrapped_key,
            )
            if status.endswith(" 1"):
                sealed_now.append(key.access_key_id)
                await conn.execute(  # the gateways' caches hold the record without its secret
                    "SELECT pg_notify($1, $2)",
                    IAM_CHANNEL,
                    json.dumps({"access_key_ids": [key.access_key_id], "principal_arns": []}),
                )
    if sealed_now:
        log.info("iam.bootstrap.secrets_sealed", access_key_ids=sealed_now)
    return sealed_now, waiting


async def keep_sealing_bootstrap_secrets(
    pool: asyncpg.Pool,
    load: Callable[[], Sequence[BootstrapKey]],
    secrets_: AccessKeySecrets,
    *,
    first_delay: float = 0.0,
    max_delay: float = 30.0,
) -> None:
    """Run :func:`seal_bootstrap_secrets` over ``load()`` (the bootstrap file, read again each round: the
    deployment may write the admin's profile after the store started) until nothing is left to seal,
    pausing longer and longer while the kms is unreachable or sealed or a credentials file is missing."""
    delay = first_delay
    while True:
        await asyncio.sleep(delay)
        delay = min(max(delay * 2, 0.5), max_delay)
        try:
            _, waiting = await seal_bootstrap_secrets(pool, await asyncio.to_thread(load), secrets_)
        except (errors.CofferError, asyncpg.PostgresError, OSError) as exc:
            log.warning("iam.bootstrap.secrets_not_sealed_yet", error=type(exc).__name__, retry_in=delay)
            continue
        if not waiting:
            return


async def issue_user_key(
    conn: asyncpg.Connection,
    name: str,
    *,
    policy: str | None = ADMIN_POLICY_TEXT,
    account: str = ROOT_ACCOUNT,
    secrets_: AccessKeySecrets | None = None,
) -> tuple[str, str]:
    """Create user ``name`` (with inline policy ``policy`` when given) if missing and a new access key of
    it; returns ``(access key id, secret access key)``. For tests and bootstrap tooling (A1's IAM API is the
    way for users). With ``secrets_`` (a store's sealer) the secret is sealed into the row as IAM
    CreateAccessKey does; without, the key has none (Coffer's own signing only)."""
    from coffer.crypto.access_keys import new_access_key_id, new_secret_access_key

    akid, secret = new_access_key_id(), new_secret_access_key()
    sealed = await secrets_.seal_unless_kms_sealed(akid, secret) if secrets_ is not None else None
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO store.iam_accounts (account_id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING",
            account,
        )
        pid = await _ensure_principal(conn, kind="user", name=name, account=account)
        if policy is not None:
            await _ensure_policy(conn, pid, "Inline", policy)
        await conn.execute(
            """INSERT INTO store.iam_access_keys
                 (access_key_id, principal_id, signing_key, secret_ciphertext, secret_wrapped_key)
               VALUES ($1, $2, $3, $4, $5)""",
            akid,
            pid,
            derive_signing_key(secret),
            sealed.ciphertext if sealed is not None else None,
            sealed.wrapped_key if sealed is not None else None,
        )
        await conn.execute(
            "SELECT pg_notify($1, $2)",
            IAM_CHANNEL,
            json.dumps({"access_key_ids": [akid], "principal_arns": []}),
        )
    return akid, secret


def bootstrap_entry(key: BootstrapKey) -> dict[str, str]:
    """``key`` as an entry of the bootstrap keys file."""
    entry = {"user": key.user, "access_key_id": key.access_key_id, "signing_key": key.signing_key.hex()}
    if key.credentials_file is not None:
        entry["credentials_file"] = key.credentials_file
    return entry
