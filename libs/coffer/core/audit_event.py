"""CloudTrail-shaped audit events: the record type, secret redaction, and the canonical JSON bytes. Pure.

An event holds who called (``userIdentity``), what was called (``eventSource``, ``eventName``), where
(``awsRegion``, ``sourceIPAddress``, ``userAgent``), with which parameters (``requestParameters``, secret
values and secret keys left out), what came back (``responseElements``: identifiers such as the ARN and the
VersionId, never a value), how it ended (``errorCode``, ``errorMessage``), the ids (``requestID`` from the
called service, ``eventID`` unique per event), whether it only read (``readOnly``) and the resources touched.

The canonical encoding is what the audit chain hashes and stores, so it must give the same bytes for the same
event on every run and every machine: keys sorted, no whitespace, UTF-8 (not ``\\u`` escapes), no floats
(times are strings), no NaN.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

EVENT_VERSION: Final = "1.09"
"""The CloudTrail record version Coffer's events follow (``major.minor``)."""

EVENT_TYPE: Final = "AwsApiCall"

SHORT_FIELD_LIMIT: Final = 1024
"""``userAgent``, ``errorCode`` and ``errorMessage`` are cut to 1 KB (1024 characters), as CloudTrail does."""

_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"

# Secret values and secret keys never enter an audit record: the value of a secret (SecretString,
# SecretBinary), a generated password (RandomPassword), KMS plaintexts and data keys (Plaintext, the
# plaintext data key), key material, credentials (SecretAccessKey, SessionToken, passwords, private keys) and
# the rotation token that authorises a rotation step. They are left out (the key is removed), not masked.
# Names are compared after lower-casing and dropping ``_`` and ``-``, so ``SecretString``,
# ``secretString`` and ``secret_string`` are the same name.
SECRET_FIELD_NAMES: Final[frozenset[str]] = frozenset(
    {
        "secretstring",
        "secretbinary",
        "randompassword",
        "plaintext",
        "plaintextdatakey",
        "datakey",
        "keymaterial",
        "secretaccesskey",
        "sessiontoken",
        "rotationtoken",
        "password",
        "privatekey",
        # the kms's unseal key shares (OperatorInit answers them, OperatorUnseal takes one)
        "share",
        "shares",
    }
)
# Any name ending in one of these is a secret too (``masterUserPassword``, ``newSecretAccessKey``, ...).
SECRET_FIELD_SUFFIXES: Final[tuple[str, ...]] = (
    "password",
    "secretaccesskey",
    "sessiontoken",
    "plaintext",
    "privatekey",
    "secretstring",
    "secretbinary",
)
# ...except a password *policy* parameter, which says how long or which characters, not what.
_NOT_SECRET: Final[frozenset[str]] = frozenset({"passwordlength"})

_NAME_NOISE = re.compile(r"[_\-]")


def is_secret_field(name: str) -> bool:
    """True when a parameter of this name carries a secret value or a secret key (see the rule above)."""
    norm = _NAME_NOISE.sub("", name).lower()
    if norm in _NOT_SECRET:
        return False
    return norm in SECRET_FIELD_NAMES or norm.endswith(SECRET_FIELD_SUFFIXES)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every secret field removed, at any depth (inside lists too)."""
    if isinstance(value, Mapping):
        return {str(k): redact(v) for k, v in value.items() if not is_secret_field(str(k))}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _check_jsonable(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        raise ValueError(f"audit records hold no floats (at {path}): write times and amounts as strings")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"audit record keys must be strings (at {path})")
            _check_jsonable(v, f"{path}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_jsonable(v, f"{path}[{i}]")
        return
    raise ValueError(f"audit records hold only JSON values, got {type(value).__name__} at {path}")


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of a JSON value: sorted keys, no whitespace, UTF-8, no floats, no NaN."""
    _check_jsonable(value, "$")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def format_event_time(when: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC, whole seconds (a naive datetime is taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime(_TIME_FORMAT)


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:SHORT_FIELD_LIMIT]


def _thaw(value: Any) -> Any:
    """A plain dict/list copy (events keep their parameters as tuples and read-only views)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    """Read-only views and tuples, so a frozen event's parameters cannot change after it was hashed."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """Who called: ``type`` (IAMUser, AssumedRole, Root, AWSService), ARN, account, access key id and
    principal id."""

    type: str
    arn: str
    account_id: str
    access_key_id: str = ""
    principal_id: str = ""
    #: IAM user name (users only; ``userName`` is left out when empty).
    user_name: str = ""

    def to_record(self) -> dict[str, str]:
        record = {
            "type": self.type,
            "arn": self.arn,
            "accountId": self.account_id,
            "accessKeyId": self.access_key_id,
            "principalId": self.principal_id,
        }
        if self.user_name:
            record["userName"] = self.user_name
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> UserIdentity:
        return cls(
            type=str(record.get("type", "")),
            arn=str(record.get("arn", "")),
            account_id=str(record.get("accountId", "")),
            access_key_id=str(record.get("accessKeyId", "")),
            principal_id=str(record.get("principalId", "")),
            user_name=str(record.get("userName", "")),
        )


@dataclass(frozen=True, slots=True)
class AuditResource:
    """A resource an event touched: ARN, account, and a type such as ``AWS::SecretsManager::Secret``."""

    arn: str
    account_id: str
    type: str

    def to_record(self) -> dict[str, str]:
        return {"ARN": self.arn, "accountId": self.account_id, "type": self.type}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A CloudTrail-shaped event. :func:`new_event` builds one (redacting and freezing the parameters)."""

    event_time: str
    event_source: str
    event_name: str
    aws_region: str
    source_ip_address: str
    user_agent: str | None
    user_identity: UserIdentity
    request_parameters: Mapping[str, Any] | None
    response_elements: Mapping[str, Any] | None
    error_code: str | None
    error_message: str | None
    request_id: str
    event_id: str
    read_only: bool
    resources: tuple[AuditResource, ...] = field(default=())

    def to_record(self) -> dict[str, Any]:
        """The event as CloudTrail's JSON record (AWS field names); optional fields only when they apply."""
        record: dict[str, Any] = {
            "eventVersion": EVENT_VERSION,
            "eventType": EVENT_TYPE,
            "eventTime": self.event_time,
            "eventSource": self.event_source,
            "eventName": self.event_name,
            "awsRegion": self.aws_region,
            "sourceIPAddress": self.source_ip_address,
            "userIdentity": self.user_identity.to_record(),
            "requestParameters": _thaw(self.request_parameters),
            "responseElements": _thaw(self.response_elements),
            "requestID": self.request_id,
            "eventID": self.event_id,
            "readOnly": self.read_only,
            "recipientAccountId": self.user_identity.account_id,
        }
        if self.user_agent is not None:
            record["userAgent"] = self.user_agent
        if self.error_code is not None:
            record["errorCode"] = self.error_code
        if self.error_message is not None:
            record["errorMessage"] = self.error_message
        if self.resources:
            record["resources"] = [r.to_record() for r in self.resources]
        return record

    def canonical(self) -> bytes:
        """The canonical JSON bytes of :meth:`to_record`: what the chain hashes and what is stored."""
        return canonical_json(self.to_record())

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AuditEvent:
        """Read a record back (redacting again, so a record from anywhere cannot smuggle a value in)."""
        return new_event(
            event_time=str(record["eventTime"]),
            event_source=str(record["eventSource"]),
            event_name=str(record["eventName"]),
            aws_region=str(record["awsRegion"]),
            source_ip_address=str(record["sourceIPAddress"]),
            user_agent=record.get("userAgent"),
            user_identity=UserIdentity.from_record(record.get("userIdentity") or {}),
            request_parameters=record.get("requestParameters"),
            response_elements=record.get("responseElements"),
            error_code=record.get("errorCode"),
            error_message=record.get("errorMessage"),
            request_id=str(record["requestID"]),
            event_id=str(record["eventID"]),
            read_only=bool(record["readOnly"]),
            resources=[
                AuditResource(arn=str(r["ARN"]), account_id=str(r["accountId"]), type=str(r["type"]))
                for r in record.get("resources") or ()
            ],
        )


def new_event(
    *,
    event_time: datetime | str,
    event_source: str,
    event_name: str,
    aws_region: str,
    source_ip_address: str,
    user_identity: UserIdentity,
    request_id: str,
    read_only: bool,
    user_agent: str | None = None,
    request_parameters: Mapping[str, Any] | None = None,
    response_elements: Mapping[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    event_id: str | None = None,
    resources: Sequence[AuditResource] = (),
) -> AuditEvent:
    """Build an event: secret fields removed from the parameters and response, short fields cut to 1 KB, a
    fresh random UUID as ``eventID`` unless one is given, the time as ``YYYY-MM-DDTHH:MM:SSZ`` UTC.

    Raises ``ValueError`` when a parameter is not a plain JSON value (floats included), so a record that could
    not be encoded canonically is refused when it is made, not when it is stored.
    """
    params = None if request_parameters is None else redact(request_parameters)
    response = None if response_elements is None else redact(response_elements)
    _check_jsonable(params, "requestParameters")
    _check_jsonable(response, "responseElements")
    return AuditEvent(
        event_time=event_time if isinstance(event_time, str) else format_event_time(event_time),
        event_source=event_source,
        event_name=event_name,
        aws_region=aws_region,
        source_ip_address=source_ip_address,
        user_agent=_cut(user_agent),
        user_identity=user_identity,
        request_parameters=None if params is None else _freeze(params),
        response_elements=None if response is None else _freeze(response),
        error_code=_cut(error_code),
        error_message=_cut(error_message),
        request_id=request_id,
        event_id=event_id if event_id is not None else str(uuid.uuid4()),
        read_only=read_only,
        resources=tuple(resources),
    )
