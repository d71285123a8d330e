"""The tamper-evident audit chain: hash-chained event records and Ed25519-signed digests. No I/O.

Rules:

- Events are numbered ``seq`` = 1, 2, 3, ... without gaps, in the order they were recorded.
- The chain starts from a genesis hash of 32 zero bytes.
- Each event's record hash is ``SHA-256(b"coffer-audit-v1\\0" || previous hash || seq as 8 bytes big-endian
  || record)``, where ``record`` is the event's canonical JSON bytes as stored (never re-serialised).
- A digest seals a contiguous range of events: ``firstSeq``, ``lastSeq``, ``eventCount``,
  ``headHash`` (hex record hash of event ``lastSeq``), the time window ``startTime``/``endTime``, the
  region, the hex SHA-256 of the previous digest's canonical bytes and the previous digest's hex signature
  (both ``null`` in the first digest), the signing key's id and ``"Ed25519"``. A digest with no events
  repeats the previous head and has ``firstSeq = lastSeq + 1``. Digests follow each other without gaps:
  each ``firstSeq`` is the previous ``lastSeq + 1``, the first one starts at 1.
- A digest is signed with Ed25519 over its canonical JSON bytes (sorted keys, no whitespace, UTF-8).
- A key's id is the hex SHA-256 of its raw 32-byte public key; the public key is exported as PEM
  (SubjectPublicKeyInfo).

:func:`verify` walks the events in the order given and reports the first problem: a sequence gap is a deleted
event, a sequence seen twice an inserted one, a sequence that goes backwards (or jumps ahead of one that comes
later) a reordered one, and a record whose hash does not match with the sequence intact a modified one. Rows
renumbered after the fact are told apart by the stored hashes: a record whose stored hash was made under
another ``seq`` shows where it came from. Events after the last digest are not sealed yet; they are checked
against each other only.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coffer.core.audit_event import canonical_json

HASH_DOMAIN: Final = b"coffer-audit-v1\0"
GENESIS_HASH: Final = bytes(32)
DIGEST_VERSION: Final = "1"
SIGNATURE_ALGORITHM: Final = "Ed25519"


def record_hash(prev_hash: bytes, seq: int, record: bytes) -> bytes:
    """``SHA-256(domain || prev_hash || seq (8 bytes, big-endian) || record)``."""
    if len(prev_hash) != 32:
        raise ValueError("a previous hash is 32 bytes")
    if seq < 1:
        raise ValueError("sequence numbers start at 1")
    return hashlib.sha256(HASH_DOMAIN + prev_hash + seq.to_bytes(8, "big") + record).digest()


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    """One stored event: its number, id, canonical record bytes, the previous hash and its own hash."""

    seq: int
    event_id: str
    record: bytes
    prev_hash: bytes
    hash: bytes


class AuditChain:
    """Appends records to a chain held in memory (the store keeps the head and does the same under a lock)."""

    def __init__(self, *, head_seq: int = 0, head_hash: bytes = GENESIS_HASH) -> None:
        self.head_seq = head_seq
        self.head_hash = head_hash

    def append(self, event_id: str, record: bytes) -> ChainedEvent:
        seq = self.head_seq + 1
        h = record_hash(self.head_hash, seq, record)
        event = ChainedEvent(seq=seq, event_id=event_id, record=record, prev_hash=self.head_hash, hash=h)
        self.head_seq, self.head_hash = seq, h
        return event


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """Read a PEM public key; ``ValueError`` when it is not an Ed25519 key."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the audit digest key must be an Ed25519 public key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(key.public_bytes_raw()).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedDigest:
    """A digest's fields (AWS-style names, JSON values) and its 64-byte Ed25519 signature."""

    body: Mapping[str, Any]
    signature: bytes

    def canonical(self) -> bytes:
        return canonical_json(dict(self.body))

    @property
    def first_seq(self) -> int:
        return _int_field(self.body, "firstSeq")

    @property
    def last_seq(self) -> int:
        return _int_field(self.body, "lastSeq")


def _int_field(body: Mapping[str, Any], name: str) -> int:
    """An integer field of a digest, or -1 when it is absent or not an integer (its signature fails then)."""
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


class DigestSigner:
    """Makes the chain of signed digests with one Ed25519 key."""

    def __init__(self, private_key: Ed25519PrivateKey | None = None) -> None:
        self._key = private_key if private_key is not None else Ed25519PrivateKey.generate()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def public_key_pem(self) -> bytes:
        return public_key_pem(self.public_key)

    def seal(
        self,
        events: Sequence[ChainedEvent],
        *,
        region: str,
        start_time: str,
        end_time: str,
        previous: SignedDigest | None,
    ) -> SignedDigest:
        """Seal the events recorded since ``previous`` (all of them, in order; may be none)."""
        first = 1 if previous is None else previous.last_seq + 1
        for offset, event in enumerate(events):
            if event.seq != first + offset:
                raise ValueError(f"digest events must run from seq {first} without gaps, got {event.seq}")
        if events:
            head = events[-1].hash.hex()
        elif previous is not None:
            head = str(previous.body["headHash"])
        else:
            head = GENESIS_HASH.hex()
        body: dict[str, Any] = {
            "digestVersion": DIGEST_VERSION,
            "region": region,
            "firstSeq": first,
            "lastSeq": first + len(events) - 1,
            "eventCount": len(events),
            "headHash": head,
            "startTime": start_time,
            "endTime": end_time,
            "previousDigestHash": None
            if previous is None
            else hashlib.sha256(previous.canonical()).hexdigest(),
            "previousDigestSignature": None if previous is None else previous.signature.hex(),
            "publicKeyFingerprint": self.key_id,
            "signatureAlgorithm": SIGNATURE_ALGORITHM,
        }
        return SignedDigest(body=body, signature=self._key.sign(canonical_json(body)))


class ProblemKind(StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    DIGEST_SIGNATURE = "digest_signature"
    """A digest whose signature does not verify with the key (edited, or signed with another key)."""
    DIGEST_MISSING = "digest_missing"
    """A digest absent from the chain of digests (a gap in the ranges, or a broken link to the previous)."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    kind: ProblemKind | None = None
    sequence: int | None = None
    event_id: str | None = None
    digest_index: int | None = None
    message: str = "chain and digests verified"
    events_checked: int = 0
    digests_checked: int = 0
    unsealed_events: int = 0
    """Events after the last digest: checked against each other, not yet against a signature."""
    details: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class _Problem:
    kind: ProblemKind
    sequence: int | None
    event_id: str | None
    message: str
    digest_index: int | None = None


def _original_seq(event: ChainedEvent, limit: int) -> int | None:
    """The ``seq`` the event's stored hash was made under (its stored previous hash taken as intact)."""
    if len(event.prev_hash) != 32:
        return None
    for candidate in range(1, limit + 1):
        if record_hash(event.prev_hash, candidate, event.record) == event.hash:
            return candidate
    return None


def _check_events(events: Sequence[ChainedEvent]) -> tuple[_Problem | None, dict[int, bytes]]:
    """First problem in the events' order and sequence, and the verified hash of every seq up to it."""
    seqs = [e.seq for e in events]
    stored_hash_at = {e.hash: pos for pos, e in enumerate(events)}
    limit = max([*seqs, 0]) + len(events) + 1
    seen: set[int] = set()
    verified: dict[int, bytes] = {}
    prev = GENESIS_HASH
    expected = 1
    for pos, event in enumerate(events):
        s = event.seq
        if s in seen:
            # Two events claim one seq. The genuine one is the one the next event links to.
            first = events[seqs.index(s)]
            after = events[pos + 1] if pos + 1 < len(events) else None
            culprit = event
            if after is not None and after.prev_hash == event.hash and event.prev_hash == first.prev_hash:
                culprit = first
            return _Problem(
                ProblemKind.INSERTED,
                s,
                culprit.event_id,
                f"event {culprit.event_id} was inserted: it claims seq {s}, which another event holds",
            ), verified
        if s < expected:
            return _Problem(
                ProblemKind.REORDERED, s, event.event_id, f"event seq {s} comes after seq {expected - 1}"
            ), verified
        if s > expected:
            later = [p for p in _positions(seqs, expected) if p > pos]
            if later:
                run = seqs[pos : later[0]]
                if len(run) > 1 and run == list(range(s, s + len(run))):
                    # One event was moved down past an ordered run: name the moved one.
                    moved = events[later[0]]
                    return _Problem(
                        ProblemKind.REORDERED,
                        expected,
                        moved.event_id,
                        f"event seq {expected} comes after seq {run[-1]}",
                    ), verified
                return _Problem(
                    ProblemKind.REORDERED,
                    s,
                    event.event_id,
                    f"event seq {s} comes before seq {expected}",
                ), verified
            return _Problem(
                ProblemKind.DELETED,
                expected,
                None,
                f"event seq {expected} is missing (deleted) between seq {expected - 1} and seq {s}",
            ), verified
        seen.add(s)
        computed = record_hash(prev, s, event.record)
        ok = event.prev_hash == prev and computed == event.hash
        if not ok and any(p > pos for p in _positions(seqs, s)):
            return _Problem(
                ProblemKind.INSERTED,
                s,
                event.event_id,
                f"event {event.event_id} was inserted: it claims seq {s}, which a later event holds",
            ), verified
        if ok:
            verified[s] = computed
            prev = computed
            expected = s + 1
            continue
        if event.prev_hash == prev:
            return _Problem(
                ProblemKind.MODIFIED,
                s,
                event.event_id,
                f"event seq {s} was modified: its record no longer matches its hash",
            ), verified
        # The link to the previous event is broken: find out where this row's stored hash says it belongs.
        origin = _original_seq(event, limit)
        if origin is None or (origin == s and pos == 0):
            return _Problem(
                ProblemKind.MODIFIED,
                s,
                event.event_id,
                f"event seq {s} was modified: its record and stored hashes disagree",
            ), verified
        if origin == s:
            before = events[pos - 1]
            return _Problem(
                ProblemKind.MODIFIED,
                before.seq,
                before.event_id,
                f"event seq {before.seq} was modified and re-hashed: seq {s} points at its original hash",
            ), verified
        predecessor = stored_hash_at.get(event.prev_hash)
        if origin == s - 1 and (
            (predecessor is not None and predecessor == pos - 2)
            or (event.prev_hash == GENESIS_HASH and pos == 1)
        ):
            before = events[pos - 1]
            return _Problem(
                ProblemKind.INSERTED,
                before.seq,
                before.event_id,
                f"event seq {before.seq} was inserted: the events after it were renumbered up by one",
            ), verified
        if origin == s + 1 and predecessor is None:
            return _Problem(
                ProblemKind.DELETED,
                s,
                None,
                f"the event recorded as seq {s} was deleted and the events after it renumbered down by one",
            ), verified
        return _Problem(
            ProblemKind.REORDERED,
            s,
            event.event_id,
            f"event seq {s} was recorded as seq {origin}: events were reordered",
        ), verified
    return None, verified


def _positions(seqs: Sequence[int], wanted: int) -> Iterable[int]:
    return (pos for pos, s in enumerate(seqs) if s == wanted)


def _check_digests(
    digests: Sequence[SignedDigest],
    public_key: Ed25519PublicKey,
    verified: Mapping[int, bytes],
    last_event_seq: int,
) -> _Problem | None:
    fingerprint = key_id(public_key)
    previous: SignedDigest | None = None
    for index, digest in enumerate(digests):
        try:
            body = digest.canonical()
            public_key.verify(digest.signature, body)
        except (InvalidSignature, ValueError):
            return _Problem(
                ProblemKind.DIGEST_SIGNATURE,
                None,
                None,
                f"digest {index} has a bad signature (edited, or not signed by key {fingerprint[:16]}...)",
                index,
            )
        fields = digest.body
        if (
            fields.get("publicKeyFingerprint") != fingerprint
            or fields.get("signatureAlgorithm") != SIGNATURE_ALGORITHM
        ):
            return _Problem(
                ProblemKind.DIGEST_SIGNATURE, None, None, f"digest {index} names another signing key", index
            )
        expected_first = 1 if previous is None else previous.last_seq + 1
        expected_hash = None if previous is None else hashlib.sha256(previous.canonical()).hexdigest()
        expected_sig = None if previous is None else previous.signature.hex()
        if (
            digest.first_seq != expected_first
            or fields.get("previousDigestHash") != expected_hash
            or fields.get("previousDigestSignature") != expected_sig
        ):
            return _Problem(
                ProblemKind.DIGEST_MISSING,
                expected_first,
                None,
                f"a digest is missing before digest {index} (it should start at seq {expected_first} "
                "and link to the previous digest)",
                index,
            )
        count = _int_field(fields, "eventCount")
        if count != digest.last_seq - digest.first_seq + 1:
            return _Problem(
                ProblemKind.DIGEST_SIGNATURE,
                None,
                None,
                f"digest {index} has an inconsistent event count",
                index,
            )
        if count > 0:
            if digest.last_seq > last_event_seq:
                return _Problem(
                    ProblemKind.DELETED,
                    last_event_seq + 1,
                    None,
                    f"events seq {last_event_seq + 1} to {digest.last_seq} were sealed by digest {index} "
                    "but are gone (deleted)",
                    index,
                )
            head = verified.get(digest.last_seq)
            if head is None or head.hex() != fields.get("headHash"):
                return _Problem(
                    ProblemKind.MODIFIED,
                    digest.first_seq,
                    None,
                    f"events seq {digest.first_seq} to {digest.last_seq} were rewritten: "
                    f"their head hash differs from digest {index}",
                    index,
                )
        previous = digest
    return None


def verify(
    events_in_order: Sequence[ChainedEvent],
    digests: Sequence[SignedDigest],
    public_key: Ed25519PublicKey | bytes,
) -> VerifyReport:
    """Check the events (as read, in order) and the digests (oldest first) with the digest public key (or its
    PEM). The report names the first problem in chain order: a problem in a digest that seals only events
    before the first event problem comes first (a rewritten range, an edited or foreign digest), else the
    event problem; with no event problem, the first digest problem. Events after the last digest are
    counted in ``unsealed_events``: they are checked against each other, not yet against a signature.
    """
    key = load_public_key(public_key) if isinstance(public_key, bytes) else public_key
    event_problem, verified = _check_events(events_in_order)
    checked = list(digests)
    if event_problem is not None:
        # Digests sealing only events verified before the event problem can still name an earlier problem.
        last_good = max(verified, default=0)
        if event_problem.sequence is not None:
            last_good = min(last_good, event_problem.sequence - 1)
        checked = list(itertools.takewhile(lambda d: d.last_seq <= last_good, digests))
    digest_problem = _check_digests(checked, key, verified, max(verified, default=0))
    sealed = digests[-1].last_seq if digests else 0
    unsealed = sum(1 for e in events_in_order if e.seq > sealed)
    problem = digest_problem or event_problem
    if problem is None:
        return VerifyReport(
            ok=True,
            events_checked=len(events_in_order),
            digests_checked=len(digests),
            unsealed_events=unsealed,
        )
    return VerifyReport(
        ok=False,
        kind=problem.kind,
        sequence=problem.sequence,
        event_id=problem.event_id,
        digest_index=problem.digest_index,
        message=problem.message,
        events_checked=len(events_in_order),
        digests_checked=len(digests),
        unsealed_events=unsealed,
    )
