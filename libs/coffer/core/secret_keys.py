"""The policy condition keys of a Secrets Manager request (iam-policies.md §3.2-§3.3). Pure: a request's
parameters and the secret's stored facts in, a key map out.

``secret_keys`` builds the resource side (``secretsmanager:SecretId``, ``…:ResourceTag/<k>`` and
``aws:ResourceTag/<k>``, ``…:resource/AllowRotationLambdaArn``, ``…:SecretPrimaryRegion``) from a
:class:`SecretFacts`; ``request_keys`` the request-parameter keys that exist only when the request carries the
parameter (``Name``, ``Description``, ``KmsKeyId``, ``VersionId``, ``VersionStage``, ``RotationLambdaARN``,
``AddReplicaRegions``, ``aws:RequestTag/<k>``, ``aws:TagKeys``) plus the boolean/numeric ones that always
carry their effective value (``ForceDeleteWithoutRecovery``, ``RecoveryWindowInDays``, ``BlockPublicPolicy``);
``global_keys`` the per-request globals (``aws:CurrentTime``, ``aws:EpochTime``, ``aws:SecureTransport``,
``aws:RequestedRegion``, ``aws:SourceIp``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coffer.core.model import Tag

Keys = dict[str, tuple[str, ...]]

#: Condition keys whose value changes from one request to the next: a decision whose policies mention any of
#: them is never cached (``policy_is_volatile``).
VOLATILE_KEYS = ("aws:currenttime", "aws:epochtime", "aws:sourceip", "aws:tokenissuetime")


@dataclass(frozen=True, slots=True)
class SecretFacts:
    """What authorization needs of a stored secret (loaded with the call's own query)."""

    arn: str
    name: str
    account: str
    region: str
    tags: tuple[Tag, ...] | None = None
    resource_policy: str | None = None
    primary_region: str | None = None
    rotation_lambda_arn: str | None = None
    rotation_rotator: str | None = None
    kms_key_id: str | None = None
    kms_key_arn: str | None = None
    change_seq: int = 0


@dataclass(frozen=True, slots=True)
class RequestParams:
    """The request parameters that are condition keys (None / empty = not sent)."""

    name: str | None = None
    description: str | None = None
    kms_key_id: str | None = None
    version_id: str | None = None
    version_stage: str | None = None
    rotation_lambda_arn: str | None = None
    rotate_immediately: bool | None = None
    modify_rotation_rules: bool | None = None
    force_delete_without_recovery: bool | None = None
    recovery_window_in_days: int | None = None
    add_replica_regions: Sequence[str] = ()
    force_overwrite_replica_secret: bool | None = None
    block_public_policy: bool | None = None
    request_tags: Sequence[Tag] | None = None
    tag_keys: Sequence[str] | None = None
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _bool(value: bool) -> tuple[str, ...]:
    return ("true" if value else "false",)


def secret_keys(secret: SecretFacts, *, tags: Sequence[Tag] | None = None) -> Keys:
    """The resource keys of a found secret. ``tags`` overrides the stored tags (CreateSecret: the tags being
    created)."""
    keys: Keys = {
        "secretsmanager:SecretId": (secret.arn,),
        "secretsmanager:SecretPrimaryRegion": (secret.primary_region or secret.region,),
    }
    for tag in (tags if tags is not None else secret.tags) or ():
        keys[f"secretsmanager:ResourceTag/{tag.key}"] = (tag.value,)
        keys[f"aws:ResourceTag/{tag.key}"] = (tag.value,)
    rotator = secret.rotation_lambda_arn or secret.rotation_rotator
    if rotator:
        keys["secretsmanager:resource/AllowRotationLambdaArn"] = (rotator,)
    return keys


def request_keys(params: RequestParams) -> Keys:
    """The request-parameter keys a request carries (absent parameters give no key)."""
    keys: Keys = dict(params.extra)
    if params.name is not None:
        keys["secretsmanager:Name"] = (params.name,)
    if params.description is not None:
        keys["secretsmanager:Description"] = (params.description,)
    if params.kms_key_id is not None:
        keys["secretsmanager:KmsKeyId"] = (params.kms_key_id,)
    if params.version_id is not None:
        keys["secretsmanager:VersionId"] = (params.version_id,)
    if params.version_stage is not None:
        keys["secretsmanager:VersionStage"] = (params.version_stage,)
    if params.rotation_lambda_arn is not None:
        keys["secretsmanager:RotationLambdaARN"] = (params.rotation_lambda_arn,)
    if params.rotate_immediately is not None:
        keys["secretsmanager:RotateImmediately"] = _bool(params.rotate_immediately)
    if params.modify_rotation_rules is not None:
        keys["secretsmanager:ModifyRotationRules"] = _bool(params.modify_rotation_rules)
    if params.force_delete_without_recovery is not None:
        keys["secretsmanager:ForceDeleteWithoutRecovery"] = _bool(params.force_delete_without_recovery)
        if not params.force_delete_without_recovery:
            window = params.recovery_window_in_days if params.recovery_window_in_days is not None else 30
            keys["secretsmanager:RecoveryWindowInDays"] = (str(window),)
    if params.add_replica_regions:
        keys["secretsmanager:AddReplicaRegions"] = tuple(params.add_replica_regions)
    if params.force_overwrite_replica_secret is not None:
        keys["secretsmanager:ForceOverwriteReplicaSecret"] = _bool(params.force_overwrite_replica_secret)
    if params.block_public_policy is not None:
        keys["secretsmanager:BlockPublicPolicy"] = _bool(params.block_public_policy)
    if params.request_tags:
        for tag in params.request_tags:
            keys[f"aws:RequestTag/{tag.key}"] = (tag.value,)
        keys["aws:TagKeys"] = tuple(t.key for t in params.request_tags)
    elif params.tag_keys:
        keys["aws:TagKeys"] = tuple(params.tag_keys)
    return keys


def global_keys(*, now: dt.datetime, region: str, source_ip: str | None, secure: bool = True) -> Keys:
    """The global keys of one request: one clock read (UTC ISO-8601 and epoch seconds)."""
    utc = now.astimezone(dt.UTC)
    keys: Keys = {
        "aws:CurrentTime": (utc.strftime("%Y-%m-%dT%H:%M:%SZ"),),
        "aws:EpochTime": (str(int(utc.timestamp())),),
        "aws:SecureTransport": _bool(secure),
        "aws:RequestedRegion": (region,),
    }
    if source_ip:
        keys["aws:SourceIp"] = (source_ip,)
    return keys


def policy_is_volatile(text: str) -> bool:
    """Whether a policy document may decide differently for the same caller, action, resource and request
    keys (it looks at the clock or the source address). Conservative: a mention anywhere counts."""
    folded = text.casefold()
    return any(k in folded for k in VOLATILE_KEYS)
