"""The store's audit trail: durable, hash-chained events in PostgreSQL, written by group commit, sealed by
Ed25519-signed digests (``coffer.crypto.audit_chain``), read by LookupEvents and by ``coffer audit verify``.

Writing: ``await trail.record(event)`` queues the event; one background task takes every queued event and
writes them all in ONE transaction (the head row ``store.audit_head`` locked FOR UPDATE gives the next
``seq`` and previous hash; one COPY of the rows; the head updated), commits, then answers every waiter. A
failed write fails every waiter with ``errors.Unavailable``: the calls they record fail too (fail closed).

Digests: every ``digest_interval`` seconds, after ``digest_every`` events, and on demand (``seal``), a
digest sealing the events since the previous one is signed and stored in ``store.audit_digests``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coffer import metrics
from coffer.audit_trail import Batcher, PartialFailure
from coffer.core import errors
from coffer.core.audit_event import AuditEvent
from coffer.crypto.audit_chain import (
    GENESIS_HASH,
    AuditChain,
    ChainedEvent,
    DigestSigner,
    SignedDigest,
    record_hash,
)

_AUDIT_WRITE = metrics.AUDIT_WRITE.labels("store")
log = structlog.get_logger("coffer.store.audit")

DIGEST_INTERVAL_SECONDS: Final = 300.0
DIGEST_EVERY_EVENTS: Final = 1000
MAX_RESULTS: Final = 50
EXPORT_MAX_ROWS: Final = 1000

_COLUMNS: Final = (
    "seq",
    "event_id",
    "event_time",
    "account_id",
    "event_name",
    "event_source",
    "user_name",
    "principal_arn",
    "access_key_id",
    "resource_names",
    "resource_types",
    "read_only",
    "error_code",
    "record",
    "prev_hash",
    "hash",
)

#: LookupEvents attribute → the SQL condition on its indexed column ($n is the value).
_ATTRIBUTES: Final[dict[str, str]] = {
    "EventName": "event_name = ${n}",
    "Username": "user_name = ${n}",
    "AccessKeyId": "access_key_id = ${n}",
    "EventSource": "event_source = ${n}",
    "EventId": "event_id = ${n}::uuid",
    "ReadOnly": "read_only = (${n} = 'true')",
    "ResourceName": "${n} = ANY(resource_names)",
    "ResourceType": "${n} = ANY(resource_types)",
}


_ROWS_FROM = (
    "SELECT r.seq, r.event_id, r.event_time, r.account_id, r.event_name, r.event_source, r.user_name,"
    " r.principal_arn, r.access_key_id,"
    " ARRAY(SELECT jsonb_array_elements_text(r.resource_names::jsonb)),"
    " ARRAY(SELECT jsonb_array_elements_text(r.resource_types::jsonb)),"
    " r.read_only, r.error_code, r.record, r.prev_hash, r.hash"
    " FROM unnest($N1::bigint[], $N2::uuid[], $N3::timestamptz[], $N4::text[], $N5::text[], $N6::text[],"
    " $N7::text[], $N8::text[], $N9::text[], $N10::text[], $N11::text[], $N12::boolean[], $N13::text[],"
    " $N14::text[], $N15::bytea[], $N16::bytea[]) AS r(seq, event_id, event_time, account_id, event_name,"
    " event_source, user_name, principal_arn, access_key_id, resource_names, resource_types, read_only,"
    " error_code, record, prev_hash, hash)"
)


def _numbered(sql: str, first: int) -> str:
    for n in range(16, 0, -1):
        sql = sql.replace(f"$N{n}:", f"${first + n - 1}:")
    return sql


_INSERT_INTO = f"INSERT INTO store.audit_events ({', '.join(_COLUMNS)}) "
#: The batch's rows (one array per column), in the transaction that holds the head's row lock.
_INSERT = _INSERT_INTO + _numbered(_ROWS_FROM, 1)
#: One statement: move the head from ($3, $4) to ($1, $2) and insert the rows, only if the head was ($3, $4).
_FAST_INSERT = (
    "WITH head AS (UPDATE store.audit_head SET seq = $1, hash = $2 WHERE id AND seq = $3 AND hash = $4"
    " RETURNING seq) " + _INSERT_INTO + _numbered(_ROWS_FROM, 5) + " WHERE EXISTS (SELECT 1 FROM head)"
)


def _columns_of(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def _chained_event(row: Any) -> ChainedEvent:
    """A ``store.audit_events`` row (seq, event_id, record, prev_hash, hash) as a ChainedEvent."""
    return ChainedEvent(
        row["seq"],
        str(row["event_id"]),
        row["record"].encode("utf-8"),
        bytes(row["prev_hash"]),
        bytes(row["hash"]),
    )


def _signed_digest(row: Any) -> SignedDigest:
    """A ``store.audit_digests`` row (body, signature) as a SignedDigest."""
    return SignedDigest(body=json.loads(row["body"]), signature=bytes(row["signature"]))


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The audit digest key (``coffer.pki.AUDIT_KEY``); ``errors.Unavailable`` when absent or not Ed25519."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise errors.Unavailable(f"The store's audit signing key {path} cannot be read: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise errors.Unavailable(f"The store's audit signing key {path} is not an Ed25519 key.")
    return key


def _event_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _indexable(value: str) -> str:
    """``value`` for the lookup columns (jsonb, text[]), which cannot hold NUL: each NUL becomes U+FFFD
    there. The record keeps the exact value (escaped in its JSON text), and the hash chain covers it."""
    return value.replace("\x00", "\ufffd")


def _user_name(event: AuditEvent) -> str:
    identity = event.user_identity
    if identity.user_name:
        return identity.user_name
    return identity.arn.rsplit("/", 1)[-1] if "/" in identity.arn else ""


@dataclass(frozen=True, slots=True)
class LookupQuery:
    account_id: str
    attribute_key: str | None
    attribute_value: str | None
    start_time: datetime | None
    end_time: datetime | None
    max_results: int

    def fingerprint(self) -> str:
        """What a NextToken is bound to: every parameter but the page position."""
        return hashlib.sha256(
            json.dumps(
                [
                    self.account_id,
                    self.attribute_key,
                    self.attribute_value,
                    None if self.start_time is None else self.start_time.isoformat(),
                    None if self.end_time is None else self.end_time.isoformat(),
                    self.max_results,
                ]
            ).encode()
        ).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    event_time: datetime
    event_name: str
    event_source: str
    user_name: str
    access_key_id: str
    read_only: bool
    resource_names: tuple[str, ...]
    resource_types: tuple[str, ...]
    record: str


class StoreAuditTrail:
    def __init__(
        self,
        pool: asyncpg.Pool,
        key: Ed25519PrivateKey,
        *,
        region: str,
        digest_interval: float = DIGEST_INTERVAL_SECONDS,
        digest_every: int = DIGEST_EVERY_EVENTS,
    ) -> None:
        self._pool = pool
        self._signer = DigestSigner(key)
        self._region = region
        self._interval = digest_interval
        self._every = digest_every
        self._since_digest = 0
        self._digest_due = asyncio.Event()
        self._token_key = hashlib.sha256(
            b"coffer-audit-next-token\0"
            + key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        ).digest()
        self._batcher: Batcher[AuditEvent] = Batcher(self._write, name="store-audit-writer")
        #: The chain's head as this store last wrote it (None: read it under the row lock).
        self._head: tuple[int, bytes] | None = None
        self._seal_lock = asyncio.Lock()
        self._digest_task: asyncio.Task[None] | None = None

    # -- writing ------------------------------------------------------------------------------------

    async def record(self, event: AuditEvent) -> None:
        """Store ``event`` in the chain; returns once it is committed (``errors.Unavailable`` if not)."""
        await self._batcher.submit(event)

    async def record_many(self, events: Sequence[AuditEvent]) -> None:
        await asyncio.gather(*(self._batcher.submit(e) for e in events))

    async def _write(self, events: list[AuditEvent]) -> None:
        started = time.perf_counter()
        try:
            await self._write_batch(events)
            _AUDIT_WRITE.observe(time.perf_counter() - started)
        except errors.Unavailable as exc:
            if len(events) == 1 or not isinstance(exc.__cause__, asyncpg.PostgresError):
                raise
            # One event the database refuses must not fail the others written with it: one by one.
            failures: list[Exception | None] = []
            for event in events:
                try:
                    await self._write_batch([event])
                    failures.append(None)
                except errors.Unavailable as single:
                    failures.append(single)
            raise PartialFailure(failures) from exc

    @staticmethod
    def _rows(chain: AuditChain, events: list[AuditEvent]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for event in events:
            text = event.canonical()
            link = chain.append(event.event_id, text)
            identity = event.user_identity
            rows.append(
                (
                    link.seq,
                    uuid.UUID(event.event_id),
                    _event_time(event.event_time),
                    identity.account_id,
                    event.event_name,
                    event.event_source,
                    _user_name(event),
                    identity.arn,
                    identity.access_key_id,
                    json.dumps([_indexable(r.arn) for r in event.resources]),
                    json.dumps(sorted({_indexable(r.type) for r in event.resources if r.type})),
                    event.read_only,
                    event.error_code,
                    text.decode("utf-8"),
                    link.prev_hash,
                    link.hash,
                )
            )
        return rows

    async def _write_batch(self, events: list[AuditEvent]) -> None:
        """One statement when the head is known (the usual case: this store wrote last): the head row is
        moved from the head we know to the new one and the rows inserted only if it was still ours. Else,
        or when another writer moved it, the head is read under its row lock and the batch written in that
        transaction."""
        try:
            head = self._head
            if head is not None:
                chain = AuditChain(head_seq=head[0], head_hash=head[1])
                rows = self._rows(chain, events)
                status = await self._pool.execute(
                    _FAST_INSERT, chain.head_seq, chain.head_hash, head[0], head[1], *_columns_of(rows)
                )
                if status.endswith(f" {len(rows)}"):
                    self._head = (chain.head_seq, chain.head_hash)
                    self._wrote(len(events))
                    return
            self._head = None
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow("SELECT seq, hash FROM store.audit_head WHERE id FOR UPDATE")
                if row is None:
                    raise errors.Unavailable("The audit trail has no head row.")
                chain = AuditChain(head_seq=row["seq"], head_hash=bytes(row["hash"]))
                rows = self._rows(chain, events)
                await conn.execute(_INSERT, *_columns_of(rows))
                await conn.execute(
                    "UPDATE store.audit_head SET seq = $1, hash = $2 WHERE id",
                    chain.head_seq,
                    chain.head_hash,
                )
            self._head = (chain.head_seq, chain.head_hash)
        except errors.CofferError:
            self._head = None
            raise
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            self._head = None
            log.error("audit.write_failed", events=len(events), error_type=type(exc).__name__, error=str(exc))
            raise errors.Unavailable(
                "The audit trail could not be written; the call was not answered."
            ) from exc
        self._wrote(len(events))

    def _wrote(self, count: int) -> None:
        self._since_digest += count
        if self._since_digest >= self._every:
            self._digest_due.set()

    # -- digests ------------------------------------------------------------------------------------

    @property
    def public_key_pem(self) -> bytes:
        return self._signer.public_key_pem()

    @property
    def fingerprint(self) -> str:
        return self._signer.key_id

    def start(self) -> None:
        self._digest_task = asyncio.get_running_loop().create_task(
            self._digest_loop(), name="store-audit-digests"
        )

    async def _digest_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._digest_due.wait(), timeout=self._interval)
            self._digest_due.clear()
            try:
                await self.seal()
            except Exception:  # logged; the next round tries again
                log.exception("audit.seal_failed")

    async def seal(self, now: datetime | None = None) -> SignedDigest | None:
        """Sign a digest of the events since the previous digest (also when there are none). None when
        the chain since the previous digest has a gap (a tampered trail is not sealed over)."""
        when = now or datetime.now(UTC)
        async with self._seal_lock, self._pool.acquire() as conn, conn.transaction():
            await conn.fetchrow("SELECT seq FROM store.audit_head WHERE id FOR UPDATE")
            last = await conn.fetchrow(
                "SELECT digest_no, body, signature FROM store.audit_digests ORDER BY digest_no DESC LIMIT 1"
            )
            previous = None if last is None else _signed_digest(last)
            first = 1 if previous is None else previous.last_seq + 1
            rows = await conn.fetch(
                "SELECT seq, event_id, record, prev_hash, hash FROM store.audit_events WHERE seq >= $1"
                " ORDER BY seq",
                first,
            )
            events = [_chained_event(r) for r in rows]
            # Never sign over a tampered range: the events since the previous digest must chain from its head.
            head = GENESIS_HASH if previous is None else bytes.fromhex(str(previous.body.get("headHash")))
            for event in events:
                if event.prev_hash != head or record_hash(head, event.seq, event.record) != event.hash:
                    log.error("audit.seal_refused", seq=event.seq, error="the chain does not verify")
                    return None
                head = event.hash
            end_text = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            start_text = end_text if previous is None else str(previous.body.get("endTime"))
            try:
                digest = self._signer.seal(
                    events,
                    region=self._region,
                    start_time=start_text,
                    end_time=end_text,
                    previous=previous,
                )
            except ValueError as exc:
                log.error("audit.seal_refused", error=str(exc))
                return None
            await conn.execute(
                "INSERT INTO store.audit_digests (digest_no, first_seq, last_seq, body, signature) "
                "VALUES ($1, $2, $3, $4, $5)",
                1 if last is None else last["digest_no"] + 1,
                digest.first_seq,
                digest.last_seq,
                digest.canonical().decode("utf-8"),
                digest.signature,
            )
        self._since_digest = 0
        return digest

    # -- reading ------------------------------------------------------------------------------------

    def _seal_token(self, query: LookupQuery, last_seq: int) -> str:
        payload = json.dumps({"p": query.fingerprint(), "s": last_seq}, separators=(",", ":")).encode()
        mac = hmac.new(self._token_key, payload, hashlib.sha256).digest()
        return (
            base64.urlsafe_b64encode(payload).decode().rstrip("=")
            + "."
            + base64.urlsafe_b64encode(mac).decode().rstrip("=")
        )

    def _open_token(self, query: LookupQuery, token: str) -> int:
        bad = errors.InvalidNextToken("The NextToken is not valid for these parameters.")
        try:
            payload_text, mac_text = token.split(".", 1)
            payload = base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4))
            mac = base64.urlsafe_b64decode(mac_text + "=" * (-len(mac_text) % 4))
        except ValueError:
            raise bad from None
        if not hmac.compare_digest(mac, hmac.new(self._token_key, payload, hashlib.sha256).digest()):
            raise bad
        fields = json.loads(payload)
        if fields.get("p") != query.fingerprint() or not isinstance(fields.get("s"), int):
            raise bad
        return int(fields["s"])

    async def lookup(self, query: LookupQuery, next_token: str) -> tuple[list[StoredEvent], str]:
        """One page of the account's events, newest first, and the next page's NextToken ("" at the end)."""
        before = self._open_token(query, next_token) if next_token else None
        where = ["account_id = $1"]
        args: list[Any] = [query.account_id]
        if query.attribute_key is not None:
            args.append(query.attribute_value)
            where.append(_ATTRIBUTES[query.attribute_key].replace("${n}", f"${len(args)}"))
        if query.start_time is not None:
            args.append(query.start_time)
            where.append(f"event_time >= ${len(args)}")
        if query.end_time is not None:
            args.append(query.end_time)
            where.append(f"event_time <= ${len(args)}")
        if before is not None:
            args.append(before)
            where.append(f"seq < ${len(args)}")
        args.append(query.max_results + 1)
        sql = (
            "SELECT seq, event_id, event_time, event_name, event_source, user_name, access_key_id, read_only,"
            " resource_names, resource_types, record FROM store.audit_events WHERE "
            + " AND ".join(where)
            + f" ORDER BY seq DESC LIMIT ${len(args)}"
        )
        try:
            rows = await self._pool.fetch(sql, *args)
        except asyncpg.DataError:  # an EventId that is not a UUID matches nothing
            rows = []
        events = [
            StoredEvent(
                seq=r["seq"],
                event_id=str(r["event_id"]),
                event_time=r["event_time"],
                event_name=r["event_name"],
                event_source=r["event_source"],
                user_name=r["user_name"],
                access_key_id=r["access_key_id"],
                read_only=r["read_only"],
                resource_names=tuple(r["resource_names"]),
                resource_types=tuple(r["resource_types"]),
                record=r["record"],
            )
            for r in rows
        ]
        if len(events) > query.max_results:
            events = events[: query.max_results]
            return events, self._seal_token(query, events[-1].seq)
        return events, ""

    async def export(
        self, after_seq: int, max_rows: int
    ) -> tuple[list[ChainedEvent], list[SignedDigest], bool]:
        """Rows with seq > ``after_seq`` in seq order (at most ``max_rows``), every digest (first page only),
        and whether more rows follow."""
        limit = max(1, min(max_rows or EXPORT_MAX_ROWS, EXPORT_MAX_ROWS))
        rows = await self._pool.fetch(
            "SELECT seq, event_id, record, prev_hash, hash FROM store.audit_events WHERE seq > $1 "
            "ORDER BY seq LIMIT $2",
            after_seq,
            limit + 1,
        )
        events = [_chained_event(r) for r in rows[:limit]]
        digests: list[SignedDigest] = []
        if after_seq == 0:
            digests = [
                _signed_digest(d)
                for d in await self._pool.fetch(
                    "SELECT body, signature FROM store.audit_digests ORDER BY digest_no"
                )
            ]
        return events, digests, len(rows) > limit

    async def aclose(self) -> None:
        await self._batcher.aclose()
        if self._digest_task is not None:
            self._digest_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._digest_task
