"""The audit hash chain and its signed digests: building, verifying, and naming each kind of tampering."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coffer.core.audit_event import UserIdentity, new_event
from coffer.crypto.audit_chain import (
    GENESIS_HASH,
    AuditChain,
    ChainedEvent,
    DigestSigner,
    ProblemKind,
    SignedDigest,
    key_id,
    load_public_key,
    record_hash,
    verify,
)

START = datetime(2026, 3, 4, 9, 0, 0, tzinfo=UTC)
IDENTITY = UserIdentity(type="IAMUser", arn="arn:aws:iam::000000000000:user/alice", account_id="000000000000")


def _record(n: int) -> tuple[str, bytes]:
    event = new_event(
        event_time=START + timedelta(seconds=n),
        event_source="secretsmanager.amazonaws.com",
        event_name="GetSecretValue",
        aws_region="local-1",
        source_ip_address="127.0.0.1",
        user_identity=IDENTITY,
        request_parameters={"secretId": f"app/{n}"},
        request_id=f"req-{n}",
        event_id=f"00000000-0000-4000-8000-{n:012d}",
        read_only=True,
    )
    return event.event_id, event.canonical()


def _build(
    count: int = 10, per_digest: int = 4, signer: DigestSigner | None = None
) -> tuple[list[ChainedEvent], list[SignedDigest], DigestSigner]:
    """``count`` events, sealed by digests of ``per_digest`` events each (the tail may stay unsealed)."""
    signer = signer or DigestSigner()
    chain = AuditChain()
    events = [chain.append(*_record(n)) for n in range(1, count + 1)]
    digests: list[SignedDigest] = []
    previous = None
    for start in range(0, count - count % per_digest, per_digest):
        batch = events[start : start + per_digest]
        previous = signer.seal(
            batch,
            region="local-1",
            start_time=f"2026-03-04T09:{start:02d}:00Z",
            end_time=f"2026-03-04T09:{start + per_digest:02d}:00Z",
            previous=previous,
        )
        digests.append(previous)
    return events, digests, signer


def _rehash_from(events: list[ChainedEvent], index: int) -> list[ChainedEvent]:
    """What a writer without the signing key can do: rebuild every hash from ``index`` on."""
    out = events[:index]
    prev = out[-1].hash if out else GENESIS_HASH
    for e in events[index:]:
        h = record_hash(prev, e.seq, e.record)
        out.append(dataclasses.replace(e, prev_hash=prev, hash=h))
        prev = h
    return out


# --- Building and verifying


def test_record_hash_rule() -> None:
    prev = bytes(range(32))
    expected = hashlib.sha256(b"coffer-audit-v1\0" + prev + (7).to_bytes(8, "big") + b'{"a":1}').digest()
    assert record_hash(prev, 7, b'{"a":1}') == expected
    assert bytes(32) == GENESIS_HASH


def test_chain_links_each_event_to_the_previous() -> None:
    events, _, _ = _build(5)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
        assert after.hash == record_hash(before.hash, after.seq, after.record)


def test_chain_resumes_from_a_stored_head() -> None:
    events, _, _ = _build(6)
    resumed = AuditChain(head_seq=3, head_hash=events[2].hash)
    again = [resumed.append(*_record(n)) for n in range(4, 7)]
    assert again == events[3:]


def test_intact_chain_verifies() -> None:
    events, digests, signer = _build(10, 4)
    report = verify(events, digests, signer.public_key)
    assert report.ok, report.message
    assert report.kind is None
    assert report.events_checked == 10
    assert report.digests_checked == 2
    assert report.unsealed_events == 2


def test_verify_with_exported_pem() -> None:
    events, digests, signer = _build(8, 4)
    pem = signer.public_key_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert verify(events, digests, pem).ok
    assert key_id(load_public_key(pem)) == signer.key_id
    raw = signer.public_key.public_bytes_raw()
    assert signer.key_id == hashlib.sha256(raw).hexdigest()


def test_non_ed25519_public_key_refused() -> None:
    pem = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="Ed25519"):
        load_public_key(pem)


def test_digest_fields() -> None:
    events, digests, signer = _build(8, 4)
    first, second = (d.body for d in digests)
    assert first["firstSeq"] == 1 and first["lastSeq"] == 4 and first["eventCount"] == 4
    assert first["headHash"] == events[3].hash.hex()
    assert first["previousDigestHash"] is None and first["previousDigestSignature"] is None
    assert first["signatureAlgorithm"] == "Ed25519"
    assert first["publicKeyFingerprint"] == signer.key_id
    assert first["region"] == "local-1"
    assert first["startTime"] == "2026-03-04T09:00:00Z" and first["endTime"] == "2026-03-04T09:04:00Z"
    assert second["firstSeq"] == 5 and second["lastSeq"] == 8
    assert second["previousDigestHash"] == hashlib.sha256(digests[0].canonical()).hexdigest()
    assert second["previousDigestSignature"] == digests[0].signature.hex()
    assert len(digests[0].signature) == 64


def test_empty_digest_keeps_the_head() -> None:
    events, digests, signer = _build(4, 4)
    empty = signer.seal(
        [],
        region="local-1",
        start_time="2026-03-04T09:04:00Z",
        end_time="2026-03-04T09:09:00Z",
        previous=digests[0],
    )
    assert empty.body["eventCount"] == 0
    assert empty.body["firstSeq"] == 5 and empty.body["lastSeq"] == 4
    assert empty.body["headHash"] == digests[0].body["headHash"]
    assert verify(events, [*digests, empty], signer.public_key).ok


def test_seal_refuses_a_range_with_gaps() -> None:
    events, _, signer = _build(4, 4)
    with pytest.raises(ValueError, match="without gaps"):
        signer.seal([events[0], events[2]], region="r", start_time="a", end_time="b", previous=None)


# --- Tampering with events


def test_modified_record_named() -> None:
    events, digests, signer = _build(10, 4)
    events[5] = dataclasses.replace(events[5], record=events[5].record.replace(b"app/6", b"app/X"))
    report = verify(events, digests, signer.public_key)
    assert not report.ok
    assert report.kind is ProblemKind.MODIFIED
    assert report.sequence == 6
    assert report.event_id == events[5].event_id


def test_modified_and_rehashed_record_named() -> None:
    """The writer edits one row and recomputes its hash: the next row still points at the old one."""
    events, digests, signer = _build(10, 4)
    e = events[5]
    record = e.record.replace(b"app/6", b"app/X")
    events[5] = dataclasses.replace(e, record=record, hash=record_hash(e.prev_hash, e.seq, record))
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.MODIFIED, 6, e.event_id)


def test_modified_and_rehashed_last_sealed_record_named() -> None:
    events, digests, signer = _build(10, 4)
    e = events[3]
    record = e.record.replace(b"app/4", b"app/X")
    events[3] = dataclasses.replace(e, record=record, hash=record_hash(e.prev_hash, e.seq, record))
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.MODIFIED, 4, e.event_id)


def test_first_record_relinked_named() -> None:
    """Seq 1 re-hashed onto a made-up previous hash instead of the genesis hash."""
    events, digests, signer = _build(10, 4)
    e = events[0]
    fake = bytes([1]) * 32
    events[0] = dataclasses.replace(e, prev_hash=fake, hash=record_hash(fake, 1, e.record))
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.MODIFIED, 1, e.event_id)


def test_modified_last_unsealed_record_named() -> None:
    events, digests, signer = _build(10, 4)
    events[9] = dataclasses.replace(events[9], record=events[9].record.replace(b"app/10", b"app/99"))
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence) == (ProblemKind.MODIFIED, 10)


def test_rebuilt_chain_caught_by_the_digest() -> None:
    """A writer rewrites a record and every hash after it: only the signed digest disagrees."""
    events, digests, signer = _build(10, 4)
    events[5] = dataclasses.replace(events[5], record=events[5].record.replace(b"app/6", b"app/X"))
    events = _rehash_from(events, 5)
    report = verify(events, digests, signer.public_key)
    assert report.kind is ProblemKind.MODIFIED
    assert report.sequence == 5  # the first event of the range the digest seals
    assert report.digest_index == 1


def test_deleted_event_named() -> None:
    events, digests, signer = _build(10, 4)
    del events[4]
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence) == (ProblemKind.DELETED, 5)
    assert "missing" in report.message


def test_deleted_first_event_named() -> None:
    events, digests, signer = _build(10, 4)
    del events[0]
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence) == (ProblemKind.DELETED, 1)


def test_deleted_and_renumbered_named() -> None:
    """The writer deletes seq 5 and renumbers the later rows down to hide the gap."""
    events, digests, signer = _build(10, 4)
    del events[4]
    events = [dataclasses.replace(e, seq=e.seq - 1) if e.seq > 5 else e for e in events]
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence) == (ProblemKind.DELETED, 5)


def test_deleted_sealed_tail_named() -> None:
    events, digests, signer = _build(8, 4)
    report = verify(events[:6], digests, signer.public_key)
    assert (report.kind, report.sequence) == (ProblemKind.DELETED, 7)


def test_inserted_duplicate_named() -> None:
    """A forged event with a valid hash, given the sequence of an existing one."""
    events, digests, signer = _build(10, 4)
    event_id, record = _record(99)
    prev = events[5].prev_hash
    forged = ChainedEvent(
        seq=6, event_id=event_id, record=record, prev_hash=prev, hash=record_hash(prev, 6, record)
    )
    events.insert(5, forged)
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.INSERTED, 6, event_id)


def test_inserted_duplicate_with_bad_hash_named() -> None:
    events, digests, signer = _build(10, 4)
    event_id, record = _record(99)
    events.insert(
        6, ChainedEvent(seq=6, event_id=event_id, record=record, prev_hash=bytes(32), hash=bytes(32))
    )
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.INSERTED, 6, event_id)


def test_inserted_and_renumbered_named() -> None:
    """The writer inserts a forged seq 6 with a valid hash and renumbers the later rows up by one."""
    events, digests, signer = _build(10, 4)
    event_id, record = _record(99)
    prev = events[4].hash
    forged = ChainedEvent(
        seq=6, event_id=event_id, record=record, prev_hash=prev, hash=record_hash(prev, 6, record)
    )
    shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in events[5:]]
    tampered = [*events[:5], forged, *shifted]
    report = verify(tampered, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.INSERTED, 6, event_id)


def test_swapped_events_named() -> None:
    events, digests, signer = _build(10, 4)
    events[3], events[4] = events[4], events[3]
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence) == (ProblemKind.REORDERED, 5)
    assert report.event_id == events[3].event_id


def test_swapped_sequence_numbers_named() -> None:
    """In SQL: the writer swaps the seq of two rows; read back by seq, the order looks intact."""
    events, digests, signer = _build(10, 4)
    a, b = events[3], events[4]
    events[3] = dataclasses.replace(b, seq=4)
    events[4] = dataclasses.replace(a, seq=5)
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.REORDERED, 4, b.event_id)


def test_moved_far_back_named() -> None:
    events, digests, signer = _build(10, 4)
    moved = events.pop(1)
    events.insert(7, moved)
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.REORDERED, 2, moved.event_id)


def test_moved_far_forward_named() -> None:
    events, digests, signer = _build(10, 4)
    moved = events.pop(6)
    events.insert(2, moved)
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence, report.event_id) == (ProblemKind.REORDERED, 7, moved.event_id)


# --- Tampering with digests


def test_altered_digest_named() -> None:
    events, digests, signer = _build(10, 4)
    body = dict(digests[1].body)
    body["eventCount"] = 3
    digests[1] = SignedDigest(body=body, signature=digests[1].signature)
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.digest_index) == (ProblemKind.DIGEST_SIGNATURE, 1)


def test_altered_signature_named() -> None:
    events, digests, signer = _build(10, 4)
    sig = bytearray(digests[0].signature)
    sig[0] ^= 1
    digests[0] = SignedDigest(body=digests[0].body, signature=bytes(sig))
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.digest_index) == (ProblemKind.DIGEST_SIGNATURE, 0)


def test_digests_signed_with_another_key_refused() -> None:
    events, _, signer = _build(10, 4)
    _, forged, _ = _build(10, 4, signer=DigestSigner(Ed25519PrivateKey.generate()))
    report = verify(events, forged, signer.public_key)
    assert (report.kind, report.digest_index) == (ProblemKind.DIGEST_SIGNATURE, 0)


def test_missing_digest_named() -> None:
    events, digests, signer = _build(12, 4)
    del digests[1]
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.digest_index, report.sequence) == (ProblemKind.DIGEST_MISSING, 1, 5)


def test_truncated_signature_is_a_bad_signature() -> None:
    events, digests, signer = _build(8, 4)
    digests[0] = SignedDigest(body=digests[0].body, signature=b"")
    report = verify(events, digests, signer.public_key)
    assert report.kind is ProblemKind.DIGEST_SIGNATURE


def test_garbage_digest_is_a_bad_signature() -> None:
    events, digests, signer = _build(8, 4)
    digests[1] = SignedDigest(body={"lastSeq": "eight", "weird": [1]}, signature=digests[1].signature)
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.digest_index) == (ProblemKind.DIGEST_SIGNATURE, 1)


def test_earlier_digest_problem_named_before_a_later_event_problem() -> None:
    events, digests, signer = _build(10, 4)
    body = dict(digests[0].body)
    body["headHash"] = "00" * 32
    digests[0] = SignedDigest(body=body, signature=digests[0].signature)
    events[9] = dataclasses.replace(events[9], record=events[9].record.replace(b"app/10", b"app/99"))
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.digest_index) == (ProblemKind.DIGEST_SIGNATURE, 0)


def test_event_problem_named_before_a_later_digest_problem() -> None:
    events, digests, signer = _build(10, 4)
    body = dict(digests[1].body)
    body["region"] = "elsewhere"
    digests[1] = SignedDigest(body=body, signature=digests[1].signature)
    events[2] = dataclasses.replace(events[2], record=events[2].record.replace(b"app/3", b"app/Z"))
    report = verify(events, digests, signer.public_key)
    assert (report.kind, report.sequence) == (ProblemKind.MODIFIED, 3)
