"""The principal directory as its users see it: what an access key resolves to (:class:`AccessKeyRecord`),
its wire form (``coffer.api.iam.v1.PrincipalDirectoryService``), and :class:`DirectoryCache`, the client-side
cache the gateway and the kms keep of it.

The cache holds access key id -> record (with the caller's :class:`~coffer.core.principal.Principal` built and
its policies compiled once). A miss costs one ``ResolveAccessKey`` call; afterwards a lookup is a dict read.
``WatchPrincipalChanges`` drops entries: a reset (first message of every stream, or after missed
notifications) drops all, a change drops the access keys named and the entries of the principals named
(a role's change drops its sessions). While no stream is open nothing is cached, so a change is never missed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.iam.v1 import directory_pb2 as pb
from coffer.api.iam.v1 import directory_pb2_grpc as pb_grpc
from coffer.core import errors
from coffer.core.policy import PolicyCache
from coffer.core.policy.model import PolicyKind
from coffer.core.principal import Principal, PrincipalKind
from coffer.crypto.signing import KeyMaterial
from coffer.loops import EventStream, StreamFollower, cancel_and_wait

log = structlog.get_logger("coffer.principal_directory")

IAM_CHANNEL = "coffer_iam"
SERVICE = pb.DESCRIPTOR.services_by_name["PrincipalDirectoryService"]
SERVICE_NAME = SERVICE.full_name
#: Who may call the directory (the store's peer policy).
DIRECTORY_PEERS = frozenset({"gateway", "kms"})
#: Bound on a cache; when full it is emptied (entries come back on the next calls).
CACHE_MAX = 65536


@dataclass(frozen=True, slots=True)
class AccessKeyRecord:
    access_key_id: str
    principal_arn: str
    account_id: str
    kind: PrincipalKind
    name: str
    unique_id: str
    signing_key: bytes
    status: str = "Active"
    tags: Mapping[str, str] = field(default_factory=dict)
    #: (policy name, document) of the user's or role's inline identity policies.
    policies: tuple[tuple[str, str], ...] = ()
    role_arn: str | None = None
    session_name: str | None = None
    expires: dt.datetime | None = None
    issued: dt.datetime | None = None
    token_sha256: bytes | None = None
    #: The secret access key (AWS SigV4 signs with keys derived from it): the gateway's answers only, None for
    #: other callers and for keys created before the store kept secrets. Kept out of repr (logs, tracebacks).
    secret_access_key: str | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status == "Active"

    def key_material(self) -> KeyMaterial:
        return KeyMaterial(
            access_key_id=self.access_key_id,
            signing_key=self.signing_key,
            active=self.active,
            token_sha256=self.token_sha256,
            expires=self.expires,
        )

    def principal(self, policies: PolicyCache | None = None) -> Principal:
        """The caller this key authenticates (policies compiled through ``policies``, when given)."""
        cache = policies or PolicyCache()
        compiled = tuple(cache.get(doc, PolicyKind.IDENTITY, name=name) for name, doc in self.policies)
        return Principal(
            arn=self.principal_arn,
            account=self.account_id,
            kind=self.kind,
            name=self.name,
            unique_id=self.unique_id,
            access_key_id=self.access_key_id,
            tags=dict(self.tags),
            policies=compiled,
            role_arn=self.role_arn,
            session_name=self.session_name,
            session_expires=self.expires,
            session_issued=self.issued,
        )


def _ts(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def to_proto(record: AccessKeyRecord) -> pb.ResolveAccessKeyResponse:
    msg = pb.ResolveAccessKeyResponse(
        access_key_id=record.access_key_id,
        principal_arn=record.principal_arn,
        account_id=record.account_id,
        kind=record.kind.value,
        name=record.name,
        unique_id=record.unique_id,
        tags=dict(record.tags),
        policies=[pb.PrincipalPolicy(name=n, document=d) for n, d in record.policies],
        role_arn=record.role_arn or "",
        session_name=record.session_name or "",
        status=record.status,
        signing_key=record.signing_key,
        token_sha256=record.token_sha256 or b"",
        secret_access_key=record.secret_access_key or "",
    )
    expires, issued = _ts(record.expires), _ts(record.issued)
    if expires is not None:
        msg.expires.CopyFrom(expires)
    if issued is not None:
        msg.issued.CopyFrom(issued)
    return msg


def from_proto(msg: pb.ResolveAccessKeyResponse) -> AccessKeyRecord:
    return AccessKeyRecord(
        access_key_id=msg.access_key_id,
        principal_arn=msg.principal_arn,
        account_id=msg.account_id,
        kind=PrincipalKind(msg.kind),
        name=msg.name,
        unique_id=msg.unique_id,
        signing_key=bytes(msg.signing_key),
        status=msg.status,
        tags=dict(msg.tags),
        policies=tuple((p.name, p.document) for p in msg.policies),
        role_arn=msg.role_arn or None,
        session_name=msg.session_name or None,
        expires=msg.expires.ToDatetime(tzinfo=dt.UTC) if msg.HasField("expires") else None,
        issued=msg.issued.ToDatetime(tzinfo=dt.UTC) if msg.HasField("issued") else None,
        token_sha256=bytes(msg.token_sha256) or None,
        secret_access_key=msg.secret_access_key or None,
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    """One cached directory entry: the key's record and the principal built from it."""

    record: AccessKeyRecord
    principal: Principal


class ResolvedCache:
    """access key id -> :class:`Resolved`, with the invalidation rules of the change stream."""

    def __init__(self, policies: PolicyCache | None = None) -> None:
        self._items: dict[str, Resolved] = {}
        self._policies = policies or PolicyCache()
        #: Bumped by every invalidation, so a lookup that raced one does not cache a stale answer.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, access_key_id: str) -> Resolved | None:
        return self._items.get(access_key_id)

    def put(self, record: AccessKeyRecord, generation: int) -> Resolved:
        resolved = Resolved(record, record.principal(self._policies))
        if generation == self.generation:
            if len(self._items) >= CACHE_MAX:
                self._items.clear()
            self._items[record.access_key_id] = resolved
        return resolved

    def clear(self) -> None:
        self.generation += 1
        self._items.clear()

    def drop(self, access_key_ids: Sequence[str], principal_arns: Sequence[str]) -> int:
        self.generation += 1
        dropped = 0
        for akid in access_key_ids:
            if self._items.pop(akid, None) is not None:
                dropped += 1
        if principal_arns:
            arns = set(principal_arns)
            for akid, entry in list(self._items.items()):
                if entry.record.principal_arn in arns or (entry.record.role_arn or "") in arns:
                    del self._items[akid]
                    dropped += 1
        return dropped


class DirectoryCache(StreamFollower[pb.WatchPrincipalChangesResponse]):
    """The gateway's and the kms's view of the directory: ``resolve(akid)`` (None: no such key), kept in
    step by following ``WatchPrincipalChanges`` (:meth:`start`)."""

    def __init__(
        self,
        stub: pb_grpc.PrincipalDirectoryServiceStub,
        *,
        name: str,
        retry_seconds: float = 0.2,
        max_retry_seconds: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(
            loop_name=f"{name}.iam_directory",
            task_name=f"{name}-iam-directory",
            retry_seconds=retry_seconds,
            max_retry_seconds=max_retry_seconds,
            logger=log,
        )
        self._stub = stub
        self._name = name
        self._timeout = timeout
        self.cache = ResolvedCache()

    async def resolve(self, access_key_id: str) -> Resolved | None:
        hit = self.cache.get(access_key_id)
        if hit is not None:
            return hit
        generation = self.cache.generation
        try:
            msg = await self._stub.ResolveAccessKey(
                pb.ResolveAccessKeyRequest(access_key_id=access_key_id),
                timeout=self._timeout,
                wait_for_ready=True,  # the store may be (re)starting: wait for it, within the timeout
            )
        except errors.NotFound:
            return None
        record = from_proto(msg)
        if not self.following:
            # Without a change stream a cached entry could outlive a change: answer, but do not cache.
            return Resolved(record, record.principal())
        return self.cache.put(record, generation)

    async def resolve_caller(self, principal: str, access_key_id: str | None) -> Principal | None:
        """A ``coffer.rpc.server.CallerResolver``: the Principal of a call's verified assertion (its ARN and
        access key id); None without an access key (a legacy principal); AccessDenied for a key that no
        longer exists or belongs to someone else."""
        if not access_key_id:
            return None
        resolved = await self.resolve(access_key_id)
        if resolved is None or resolved.principal.arn != principal:
            raise errors.AccessDenied("The caller's access key no longer exists.")
        return resolved.principal

    def _apply(self, event: pb.WatchPrincipalChangesResponse) -> None:
        if event.reset:
            self.cache.clear()
            if not self._following.is_set():
                self._following.set()
                log.info("iam_directory.following", service=self._name)
        else:
            self.cache.drop(list(event.access_key_ids), list(event.principal_arns))

    def _open(self) -> EventStream[pb.WatchPrincipalChangesResponse]:
        # wait_for_ready: while the store is not up (the kms starts first) the stream waits, quietly
        stream: EventStream[pb.WatchPrincipalChangesResponse] = self._stub.WatchPrincipalChanges(
            pb.WatchPrincipalChangesRequest(), wait_for_ready=True
        )
        return stream

    def _stream_gone(self) -> None:
        self.cache.clear()

    async def retarget(self, stub: pb_grpc.PrincipalDirectoryServiceStub) -> None:
        """Follow another directory from now on (everything cached is dropped)."""
        await cancel_and_wait(self._task, logger=log)
        self._stub = stub
        self._following.clear()
        self.cache.clear()
        self.start()
