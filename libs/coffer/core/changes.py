"""The change stream of WatchSecrets (issue 14), pure: what kind of event each recorded change is, and the
resume tokens.

Every write of the store ends with ``record_change(event=<use case>)``; :func:`event_kind` turns that use case
(and its payload) into the public event kind and a short detail. The detail names what changed, never a value.

A resume token is opaque to clients: ``base64url(version byte, epoch, position)``. The epoch is drawn once
per store database, so a token from another database (a restore, a new deployment) is refused like a
token too old to resume rather than silently resuming at an unrelated position. A forged token gains
nothing: every event is still authorized for the caller, so it could only skip or replay events it may see.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from typing import Any, Final

from coffer.core import errors

VERSION_CREATED: Final = "VersionCreated"
STAGES_CHANGED: Final = "StagesChanged"
METADATA_CHANGED: Final = "MetadataChanged"
DELETED: Final = "Deleted"
RESTORED: Final = "Restored"
ROTATION_STARTED: Final = "RotationStarted"
ROTATION_SUCCEEDED: Final = "RotationSucceeded"
ROTATION_FAILED: Final = "RotationFailed"
REPLICATION_STATUS_CHANGED: Final = "ReplicationStatusChanged"
HEARTBEAT: Final = "Heartbeat"

KINDS: Final = frozenset(
    {
        VERSION_CREATED,
        STAGES_CHANGED,
        METADATA_CHANGED,
        DELETED,
        RESTORED,
        ROTATION_STARTED,
        ROTATION_SUCCEEDED,
        ROTATION_FAILED,
        REPLICATION_STATUS_CHANGED,
    }
)

_FIXED: Final[Mapping[str, str]] = {
    "PutSecretValue": VERSION_CREATED,
    "UpdateSecretVersionStage": STAGES_CHANGED,
    "TagResource": METADATA_CHANGED,
    "UntagResource": METADATA_CHANGED,
    "PutResourcePolicy": METADATA_CHANGED,
    "DeleteResourcePolicy": METADATA_CHANGED,
    "CancelRotateSecret": METADATA_CHANGED,
    "DeleteSecret": DELETED,
    "PurgeSecret": DELETED,
    "RestoreSecret": RESTORED,
    "RotateSecret": ROTATION_STARTED,
    "RotationScheduled": ROTATION_STARTED,
    "RotationSucceeded": ROTATION_SUCCEEDED,
    "RotationTested": ROTATION_SUCCEEDED,
    "RotationFailed": ROTATION_FAILED,
    "ReplicateSecretToRegions": REPLICATION_STATUS_CHANGED,
    "RemoveRegionsFromReplication": REPLICATION_STATUS_CHANGED,
    "StopReplicationToReplica": REPLICATION_STATUS_CHANGED,
    "ResyncReplica": REPLICATION_STATUS_CHANGED,
}

#: Longest detail kept (a detail is a hint for people, not data).
MAX_DETAIL = 256


def _regions(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    return ", ".join(str(r) for r in value) if isinstance(value, list) else ""


def event_kind(event: str, *, version_id: str | None, payload: Mapping[str, Any]) -> tuple[str, str | None]:
    """(kind, detail) of a recorded change. A use case without a kind of its own is MetadataChanged: a
    client that caches the secret re-reads it, which is always safe."""
    if event in ("CreateSecret", "UpdateSecret"):
        if version_id is not None:
            return VERSION_CREATED, "created" if event == "CreateSecret" else None
        fields = payload.get("fields")
        what = ", ".join(str(f) for f in fields) if isinstance(fields, list) else None
        return METADATA_CHANGED, "created" if event == "CreateSecret" else what
    kind = _FIXED.get(event, METADATA_CHANGED)
    detail: str | None = None
    if event == "DeleteSecret":
        days = payload.get("recovery_window_days")
        detail = "deleted without recovery" if payload.get("force") else f"recovery window {days} days"
    elif event == "PurgeSecret":
        detail = "recovery window ended: deleted for good"
    elif event == "UpdateSecretVersionStage":
        detail = f"{payload.get('stage', '')} moved"
    elif event == "RotationFailed":
        detail = f"failed after {payload.get('tries', '?')} tries"
    elif event == "RotationTested":
        detail = "tested (RotateImmediately=false): AWSCURRENT did not move"
    elif event == "CancelRotateSecret":
        detail = "rotation cancelled"
    elif event == "ReplicateSecretToRegions":
        detail = f"replica regions added: {_regions(payload, 'regions')}"
    elif event == "RemoveRegionsFromReplication":
        detail = f"replica regions removed: {_regions(payload, 'removed')}"
    elif event == "StopReplicationToReplica":
        detail = "promoted to a standalone secret"
    elif event == "ResyncReplica":
        detail = f"replicas re-seeded: {_regions(payload, 'regions')}"
    elif kind == METADATA_CHANGED:
        detail = event
    return kind, None if detail is None else detail[:MAX_DETAIL]


_TOKEN = struct.Struct(">BQQ")
_TOKEN_VERSION = 1

RESYNC_MESSAGE = (
    "The resume token is too old to resume (the events after it are no longer kept) or was not issued by "
    "this store: resync (read again what you cache) and call WatchSecrets again without a resume token."
)


def encode_token(epoch: int, position: int) -> str:
    return base64.urlsafe_b64encode(_TOKEN.pack(_TOKEN_VERSION, epoch, position)).decode().rstrip("=")


def decode_token(token: str) -> tuple[int, int]:
    """(epoch, position) of a resume token; InvalidParameterException when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, epoch, position = _TOKEN.unpack(raw)
    except (binascii.Error, ValueError, struct.error):
        raise errors.InvalidParameter("The resume token is not one WatchSecrets gave.") from None
    if version != _TOKEN_VERSION:
        raise errors.InvalidParameter("The resume token is not one WatchSecrets gave.")
    return epoch, position
