"""The store's principal directory: access key id -> :class:`~coffer.principal_directory.AccessKeyRecord`
read from ``store.iam_*``, cached in memory and dropped as ``NOTIFY coffer_iam`` tells (every IAM change
sends ``{"access_key_ids": [...], "principal_arns": [...]}`` in its transaction). The store resolves its own
callers through it, and serves it to the gateway and the kms (``PrincipalDirectoryService``): lookups, and
the change stream their caches follow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import asyncpg
import grpc

from coffer import logs
from coffer.api.iam.v1 import directory_pb2 as pb
from coffer.api.iam.v1 import directory_pb2_grpc as pb_grpc
from coffer.core import errors
from coffer.core.principal import Principal, PrincipalKind
from coffer.loops import cancel_and_wait
from coffer.pgnotify import NotifyHub
from coffer.principal_directory import IAM_CHANNEL, AccessKeyRecord, ResolvedCache, to_proto
from coffer.rpc.context import current_peer
from coffer.store.access_key_secrets import AccessKeySecrets, SealedSecret

log = logs.get_logger("coffer.store.iam_directory")

#: The one peer given signing keys, session token digests and secret access keys with a resolved access key.
SIGNATURE_VERIFIER = "gateway"

_KEY_SQL = """
SELECT k.access_key_id, k.signing_key, k.status, k.session_name, k.token_sha256, k.expires_at,
       k.created_at, k.session_tags, p.id AS principal_id, p.account_id, p.kind, p.name, p.unique_id, p.arn,
       p.tags
FROM store.iam_access_keys k JOIN store.iam_principals p ON p.id = k.principal_id
WHERE k.access_key_id = $1
"""
_SECRET_SQL = (
    "SELECT secret_ciphertext, secret_wrapped_key FROM store.iam_access_keys WHERE access_key_id = $1"
)
_POLICIES_SQL = (
    "SELECT policy_name, document FROM store.iam_policies WHERE principal_id = $1 ORDER BY policy_name"
)


def _json_map(value: object) -> dict[str, str]:
    if value is None:
        return {}
    doc = json.loads(value) if isinstance(value, str) else value
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


async def read_access_key(
    conn: asyncpg.Connection | asyncpg.Pool, access_key_id: str
) -> AccessKeyRecord | None:
    row = await conn.fetchrow(_KEY_SQL, access_key_id)
    if row is None:
        return None
    policies = tuple(
        (r["policy_name"], r["document"]) for r in await conn.fetch(_POLICIES_SQL, row["principal_id"])
    )
    tags = _json_map(row["tags"])
    if row["kind"] == "role":
        session = row["session_name"] or ""
        tags.update(_json_map(row["session_tags"]))  # session tags override the role's
        return AccessKeyRecord(
            access_key_id=row["access_key_id"],
            principal_arn=f"arn:aws:sts::{row['account_id']}:assumed-role/{row['name']}/{session}",
            account_id=row["account_id"],
            kind=PrincipalKind.ASSUMED_ROLE,
            name=row["name"],
            unique_id=f"{row['unique_id']}:{session}",
            signing_key=bytes(row["signing_key"]),
            status=row["status"],
            tags=tags,
            policies=policies,
            role_arn=row["arn"],
            session_name=session,
            expires=row["expires_at"],
            issued=row["created_at"],
            token_sha256=bytes(row["token_sha256"]) if row["token_sha256"] is not None else None,
        )
    return AccessKeyRecord(
        access_key_id=row["access_key_id"],
        principal_arn=row["arn"],
        account_id=row["account_id"],
        kind=PrincipalKind.USER,
        name=row["name"],
        unique_id=row["unique_id"],
        signing_key=bytes(row["signing_key"]),
        status=row["status"],
        tags=tags,
        policies=policies,
        expires=row["expires_at"],
        token_sha256=bytes(row["token_sha256"]) if row["token_sha256"] is not None else None,
    )


def parse_change(payload: str) -> tuple[list[str], list[str]] | None:
    """The access key ids and principal ARNs of a ``coffer_iam`` notification; None for a reset (``{"reset":
    true}``: too many changes for one notification) or an unreadable payload (drop everything either way)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("reset"):
        return None
    keys = doc.get("access_key_ids") or []
    arns = doc.get("principal_arns") or []
    if not isinstance(keys, list) or not isinstance(arns, list):
        return None
    return [str(k) for k in keys], [str(a) for a in arns]


def iam_hub(database_url: str) -> NotifyHub:
    return NotifyHub(database_url, IAM_CHANNEL, service="store")


class IamDirectory:
    """Resolve access keys (cached; the cache follows the hub's notifications)."""

    def __init__(self, pool: asyncpg.Pool, hub: NotifyHub) -> None:
        self._pool = pool
        self.hub = hub
        self.cache = ResolvedCache()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="store-iam-directory")

    async def _follow(self) -> None:
        with self.hub.subscribe() as sub:
            async for notice in sub:
                if notice.payload is None:
                    self.cache.clear()
                    self._ready.set()
                    continue
                change = parse_change(notice.payload)
                if change is None:
                    if '"reset"' not in notice.payload:
                        log.warning("iam.unreadable_notification", payload=notice.payload[:200])
                    self.cache.clear()
                else:
                    self.cache.drop(*change)

    async def record(self, access_key_id: str) -> AccessKeyRecord | None:
        hit = self.cache.get(access_key_id)
        if hit is not None:
            return hit.record
        record = await read_access_key(self._pool, access_key_id)
        return record

    async def principal(self, access_key_id: str) -> Principal | None:
        hit = self.cache.get(access_key_id)
        if hit is not None:
            return hit.principal
        generation = self.cache.generation
        record = await read_access_key(self._pool, access_key_id)
        if record is None:
            return None
        return self.cache.put(record, generation if self._ready.is_set() else -1).principal

    async def resolve_caller(self, principal: str, access_key_id: str | None) -> Principal | None:
        """The caller of a call the gateway forwarded (its assertion's principal ARN and access key id)."""
        if not access_key_id:
            return None
        found = await self.principal(access_key_id)
        if found is None or found.arn != principal:
            raise errors.AccessDenied("The caller's access key no longer exists.")
        return found

    async def sealed_secret(self, access_key_id: str) -> SealedSecret | None:
        """The sealed secret access key of ``access_key_id`` (None: a key created before secrets were kept).
        Read on each call, never cached here: only the kms's data keys are (``DataKeyCache``)."""
        row = await self._pool.fetchrow(_SECRET_SQL, access_key_id)
        if row is None or row["secret_ciphertext"] is None:
            return None
        return SealedSecret(
            ciphertext=bytes(row["secret_ciphertext"]), wrapped_key=bytes(row["secret_wrapped_key"])
        )

    async def aclose(self) -> None:
        await cancel_and_wait(self._task, logger=log)


class DirectoryServicer(pb_grpc.PrincipalDirectoryServiceServicer):
    def __init__(self, directory: IamDirectory, secrets: AccessKeySecrets) -> None:
        self._directory = directory
        self._secrets = secrets

    async def _secret(self, access_key_id: str) -> str:
        """The key's secret access key, opened for the gateway ("" when none is stored, or when the stored
        blob does not open: logged, and the key then serves Coffer's own signing only). A kms that cannot be
        reached fails the call (retryable), rather than have the gateway cache a record without it."""
        sealed = await self._directory.sealed_secret(access_key_id)
        if sealed is None:
            return ""
        try:
            return await self._secrets.open(access_key_id, sealed)
        except errors.DecryptionFailure as exc:
            log.error("iam.access_key_secret_unopenable", access_key_id=access_key_id, error=exc.message)
            return ""

    async def ResolveAccessKey(
        self, request: pb.ResolveAccessKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveAccessKeyResponse:
        record = await self._directory.record(request.access_key_id)
        if record is None:
            raise errors.NotFound(
                f"The access key {request.access_key_id} does not exist.", code="NoSuchEntity"
            )
        msg = to_proto(record)
        if current_peer() != SIGNATURE_VERIFIER:
            # Only the gateway verifies signatures: the kms resolves callers and gets no key material (and the
            # secret is not even opened for it).
            msg.ClearField("signing_key")
            msg.ClearField("token_sha256")
            msg.ClearField("secret_access_key")
        else:
            msg.secret_access_key = await self._secret(record.access_key_id)
        return msg

    async def WatchPrincipalChanges(
        self, request: pb.WatchPrincipalChangesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchPrincipalChangesResponse]:
        with self._directory.hub.subscribe() as subscription:
            async for notice in subscription:
                if notice.payload is None:
                    yield pb.WatchPrincipalChangesResponse(reset=True)
                    continue
                change = parse_change(notice.payload)
                if change is None:
                    yield pb.WatchPrincipalChangesResponse(reset=True)
                else:
                    yield pb.WatchPrincipalChangesResponse(access_key_ids=change[0], principal_arns=change[1])
