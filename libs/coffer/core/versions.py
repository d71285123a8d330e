"""Staging labels, idempotency tokens and version retention as pure functions over plain data.

Labels are a mapping ``label -> version id`` (a label sits on at most one version). Every function returns a
new mapping; nothing here touches storage.

The one rule every label-attaching path uses: attaching L to V removes L from its previous holder P; if
L is ``AWSCURRENT`` and P != V, ``AWSPREVIOUS`` moves to P (so a rollback target that held ``AWSPREVIOUS``
loses it). Custom labels on P and V are untouched. When a *value write* (PutSecretValue, UpdateSecret,
CreateSecret) moves ``AWSCURRENT`` off a version that also carried ``AWSPENDING`` (the "rotation finished"
marker), that ``AWSPENDING`` is dropped too (recorded against AWS: v2 [CUR,PENDING] + default put v3 =>
v2 [PREV]); UpdateSecretVersionStage keeps it (v1 [CUR] -> v2 [PENDING], move CUR => v2 [CUR,PENDING]).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from coffer.core import errors
from coffer.core.model import AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretValue, StagingLabels

#: Staging labels across all versions of one secret (an AWS quota).
MAX_LABELS = 20
#: Unlabelled versions are purged once a secret has more than this many versions ...
MAX_VERSIONS = 100
#: ... but never those younger than this.
MIN_PRUNE_AGE = timedelta(hours=24)


def stages_of(labels: StagingLabels, version_id: str) -> tuple[str, ...]:
    """The labels on one version, sorted (AWS lists them in a stable order; we use alphabetical)."""
    return tuple(sorted(label for label, vid in labels.items() if vid == version_id))


def versions_to_stages(labels: StagingLabels) -> dict[str, tuple[str, ...]]:
    """``version id -> sorted labels`` for every labelled version (unlabelled versions do not appear)."""
    out: dict[str, list[str]] = {}
    for label, vid in labels.items():
        out.setdefault(vid, []).append(label)
    return {vid: tuple(sorted(ls)) for vid, ls in out.items()}


def attach(
    labels: StagingLabels, label: str, version_id: str, *, value_write: bool = False
) -> dict[str, str]:
    """Attach ``label`` to ``version_id`` following the one label rule of the module docstring."""
    new = dict(labels)
    previous_holder = new.get(label)
    if previous_holder == version_id:
        return new
    new[label] = version_id
    if label == AWSCURRENT and previous_holder is not None:
        new[AWSPREVIOUS] = previous_holder
        if value_write and labels.get(AWSPENDING) == previous_holder:
            del new[AWSPENDING]
    return new


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def labels_for_new_value(
    labels: StagingLabels,
    version_id: str,
    requested: Sequence[str] | None,
    *,
    ensure_current: bool = True,
) -> dict[str, str]:
    """Labels after a value write creates ``version_id`` (CreateSecret, PutSecretValue, UpdateSecret).

    ``requested`` empty/None means ``["AWSCURRENT"]``. The first value a secret ever gets is always
    ``AWSCURRENT``, even if other labels were requested (``ensure_current``; not for filling a rotation
    placeholder, whose version becomes current only through finishSecret). ``AWSCURRENT`` is applied first,
    so explicitly requested labels win over the ``AWSPREVIOUS`` it moves.
    """
    stages = _dedupe(requested) if requested else [AWSCURRENT]
    if ensure_current and AWSCURRENT not in labels and AWSCURRENT not in stages:
        stages.append(AWSCURRENT)
    ordered = [s for s in stages if s == AWSCURRENT] + [s for s in stages if s != AWSCURRENT]
    new = dict(labels)
    for stage in ordered:
        new = attach(new, stage, version_id, value_write=True)
    return new


def remove_from_empty_message(label: str, holder: str) -> str:
    return (
        f"The parameter RemoveFromVersionId can't be empty. Staging label {label} is currently attached to "
        f"version {holder}, so you must explicitly reference that version in RemoveFromVersionId."
    )


def unknown_version_message(version_id: str) -> str:
    return f"Secrets Manager can't find the specified secret version for VersionId: {version_id}"


def update_version_stage(
    labels: StagingLabels,
    label: str,
    *,
    move_to: str | None,
    remove_from: str | None,
    known_versions: Collection[str],
) -> dict[str, str]:
    """UpdateSecretVersionStage. Raises InvalidParameterException for the request errors."""
    if move_to is None and remove_from is None:
        raise errors.InvalidParameter(
            "You must specify MoveToVersionId, RemoveFromVersionId, or both to change a staging label."
        )
    for vid in (move_to, remove_from):
        if vid is not None and vid not in known_versions:
            raise errors.InvalidParameter(unknown_version_message(vid))
    holder = labels.get(label)
    if remove_from is not None and holder != remove_from:
        if holder is None:
            raise errors.InvalidParameter(
                f"The staging label {label} isn't attached to version {remove_from}, so it can't be removed "
                "from that version."
            )
        raise errors.InvalidParameter(
            f"The staging label {label} is currently attached to version {holder}, not to version "
            f"{remove_from} that you specified in RemoveFromVersionId."
        )
    if move_to is not None:
        if holder is not None and holder != move_to and remove_from is None:
            raise errors.InvalidParameter(remove_from_empty_message(label, holder))
        return attach(labels, label, move_to)
    if label == AWSCURRENT:
        raise errors.InvalidParameter(
            "You can't remove the staging label AWSCURRENT without moving it to another version. "
            "Specify MoveToVersionId as well."
        )
    new = dict(labels)
    del new[label]
    return new


def check_label_cap(labels: StagingLabels) -> None:
    if len(labels) > MAX_LABELS:
        raise errors.LimitExceeded(
            f"A secret can have at most {MAX_LABELS} staging labels across all of its versions; this request "
            f"would leave {len(labels)}. Remove labels you no longer use first."
        )


# --- idempotency tokens -------------------------------------------------------------------------------------


class TokenOutcome(Enum):
    NEW = "new"
    """The token is not a version of this secret yet: create one."""
    REPLAY = "replay"
    """Same token, identical value: succeed without changing anything."""
    CONFLICT = "conflict"
    """Same token, different value: ResourceExistsException."""
    FILL = "fill"
    """The token names the valueless rotation placeholder: store the value in it."""


def same_value(a: SecretValue, b: SecretValue) -> bool:
    """Equal kind and bytes, compared in constant time."""
    return a.kind == b.kind and hmac.compare_digest(a.data, b.data)


def token_outcome(*, existing_has_value: bool | None, same: bool | None) -> TokenOutcome:
    """``existing_has_value`` is None when no version carries the token, False for the placeholder."""
    if existing_has_value is None:
        return TokenOutcome.NEW
    if not existing_has_value:
        return TokenOutcome.FILL
    return TokenOutcome.REPLAY if same else TokenOutcome.CONFLICT


def token_in_use_message(token: str, arn: str) -> str:
    return (
        f"You can't use ClientRequestToken {token} because that value is already in use for a version of "
        f"secret {arn}."
    )


def already_exists_message(name: str) -> str:
    return f"The operation failed because the secret {name} already exists."


# --- retention ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionFacts:
    version_id: str
    created_date: datetime
    labelled: bool


def plan_prune(
    versions: Sequence[VersionFacts],
    *,
    now: datetime,
    incoming: int = 0,
    max_versions: int = MAX_VERSIONS,
    min_age: timedelta = MIN_PRUNE_AGE,
) -> list[str]:
    """Which unlabelled versions to delete so the secret keeps at most ``max_versions`` (counting ``incoming``
    new ones). Labelled versions and versions younger than ``min_age`` are never deleted, oldest go first.
    If a new version would push the secret over the cap and nothing may be deleted: LimitExceededException."""
    total = len(versions) + incoming
    if total <= max_versions:
        return []
    excess = total - max_versions
    candidates = sorted(
        (v for v in versions if not v.labelled and now - v.created_date >= min_age),
        key=lambda v: (v.created_date, v.version_id),
    )
    if len(candidates) < excess and incoming > 0:
        raise errors.LimitExceeded(
            f"This secret already has {len(versions)} versions and unlabelled versions are only removed once "
            f"they are {int(min_age.total_seconds() // 3600)} hours old, so it can't take another one now "
            f"(at most {max_versions}). Write new values less often, or try again later."
        )
    return [v.version_id for v in candidates[:excess]]
