"""The change stream's pure parts: the kind and detail of each recorded use case, and resume tokens."""

from __future__ import annotations

import pytest

from coffer.core import changes, errors


@pytest.mark.parametrize(
    ("event", "version_id", "payload", "expected"),
    [
        ("PutSecretValue", "v1", {"stages": ["AWSCURRENT"]}, (changes.VERSION_CREATED, None)),
        ("CreateSecret", "v1", {"name": "a"}, (changes.VERSION_CREATED, "created")),
        ("CreateSecret", None, {"name": "a"}, (changes.METADATA_CHANGED, "created")),
        (
            "UpdateSecret",
            None,
            {"fields": ["description", "kms_key_id"]},
            (changes.METADATA_CHANGED, "description, kms_key_id"),
        ),
        ("UpdateSecret", "v2", {"fields": ["value"]}, (changes.VERSION_CREATED, None)),
        (
            "UpdateSecretVersionStage",
            "v2",
            {"stage": "AWSCURRENT"},
            (changes.STAGES_CHANGED, "AWSCURRENT moved"),
        ),
        ("TagResource", None, {"keys": ["k"]}, (changes.METADATA_CHANGED, "TagResource")),
        ("PutResourcePolicy", None, {}, (changes.METADATA_CHANGED, "PutResourcePolicy")),
        ("DeleteSecret", None, {"force": True}, (changes.DELETED, "deleted without recovery")),
        ("DeleteSecret", None, {"recovery_window_days": 7}, (changes.DELETED, "recovery window 7 days")),
        ("PurgeSecret", None, {}, (changes.DELETED, "recovery window ended: deleted for good")),
        ("RestoreSecret", None, {}, (changes.RESTORED, None)),
        ("RotateSecret", "t", {"rotator": "x"}, (changes.ROTATION_STARTED, None)),
        ("RotationScheduled", "t", {}, (changes.ROTATION_STARTED, None)),
        ("RotationSucceeded", "t", {"tries": 1}, (changes.ROTATION_SUCCEEDED, None)),
        ("RotationFailed", "t", {"tries": 5}, (changes.ROTATION_FAILED, "failed after 5 tries")),
        (
            "ReplicateSecretToRegions",
            None,
            {"regions": ["r2"]},
            (changes.REPLICATION_STATUS_CHANGED, "replica regions added: r2"),
        ),
        ("SomethingNew", None, {}, (changes.METADATA_CHANGED, "SomethingNew")),
    ],
)
def test_event_kinds(
    event: str, version_id: str | None, payload: dict[str, object], expected: tuple[str, str | None]
) -> None:
    assert changes.event_kind(event, version_id=version_id, payload=payload) == expected


def test_every_kind_but_heartbeat_is_a_change_kind() -> None:
    assert changes.HEARTBEAT not in changes.KINDS and len(changes.KINDS) == 9


def test_tokens_round_trip_and_are_opaque_url_safe_text() -> None:
    token = changes.encode_token(2**53 - 1, 12345)
    assert changes.decode_token(token) == (2**53 - 1, 12345)
    assert "12345" not in token and token.isascii() and "=" not in token and "/" not in token


@pytest.mark.parametrize("bad", ["", "x", "not-a-token", changes.encode_token(1, 2) + "AA", "AAAA"])
def test_a_token_that_is_not_one_is_invalid_parameter(bad: str) -> None:
    with pytest.raises(errors.InvalidParameter):
        changes.decode_token(bad)


def test_resync_message_tells_the_client_what_to_do() -> None:
    assert "resync" in changes.RESYNC_MESSAGE and "without a resume token" in changes.RESYNC_MESSAGE
