"""Table-driven conversion between the AWS CLI's world and the protos, read from the proto descriptors.

- operation ``GetSecretValue`` ⇄ command ``get-secret-value``; field ``secret_id`` ⇄ flag ``--secret-id``
  and AWS member ``SecretId`` (a few AWS spellings are irregular: ``ARN``, ``RotationLambdaARN``,
  ``AWSAccountId``);
- flag values by field type: strings (``file://path`` reads a file), bytes (``fileb://path`` or base64),
  integers, booleans as ``--flag`` / ``--no-flag``, lists as several values (``--version-stages A B``),
  structures and lists of structures in shorthand (``Key=a,Value=b``; ``Key=name,Values=db/,prod/``) or
  JSON (``'[{"Key": "a", "Value": "b"}]'``), string maps as ``k=v`` pairs or a JSON object;
- responses as the AWS CLI prints them: PascalCase members, absent members omitted, blobs base64,
  timestamps as ISO 8601 text (``aws_timestamp``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

SECRETS_PACKAGE = "coffer.api.secrets.v1"
KMS_PACKAGE = "coffer.api.kms.v1"
IAM_PACKAGE = "coffer.api.iam.v1"
#: Packages whose services speak AWS's query protocol (IAM, STS, Organizations): their timestamps travel as
#: ISO-8601 text in UTC, which the AWS CLI prints in UTC (``"CreateDate": "2026-12-01T05:00:00+00:00"``).
#: The JSON-protocol services (Secrets Manager, KMS) send epoch seconds, which it prints in local time.
_UTC_TIMESTAMP_PACKAGES = frozenset({IAM_PACKAGE})

#: AWS member names that are not the plain PascalCase of the proto field name.
_IRREGULAR_NAMES: dict[str, dict[str, str]] = {
    SECRETS_PACKAGE: {"arn": "ARN", "rotation_lambda_arn": "RotationLambdaARN"},
    KMS_PACKAGE: {"aws_account_id": "AWSAccountId"},
}

#: Wrapper messages that exist only because proto3 cannot say "absent list" or "map of lists": printed as
#: their single list.
_LIST_WRAPPERS = frozenset({f"{SECRETS_PACKAGE}.TagSet", f"{SECRETS_PACKAGE}.VersionStages"})

#: List results that the AWS CLI prints even when empty (``"SecretList": []``). Other empty lists are omitted.
_ALWAYS_PRINTED_LISTS = frozenset(
    {
        "secret_list",
        "versions",
        "secret_values",
        "errors",
        "keys",
        "aliases",
        # IAM, Organizations
        "users",
        "roles",
        "policy_names",
        "access_key_metadata",
        "accounts",
    }
)

F = FieldDescriptor


class UsageError(ValueError):
    """A flag value that cannot be turned into the request (the CLI exits 252, like the AWS CLI)."""


# --- names ----------------------------------------------------------------------------------------------


def command_name(operation: str) -> str:
    """``GetSecretValue`` → ``get-secret-value``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", operation).lower()


#: Request fields whose natural flag would clash with a global option (``--endpoint``, ``--region``, ...).
RENAMED_FLAGS = {
    "coffer.api.secrets.v1.RegisterRotationFunctionRequest.endpoint": "--function-endpoint",
}


def flag_name(field: FieldDescriptor) -> str:
    renamed = RENAMED_FLAGS.get(field.full_name)
    if renamed is not None:
        return renamed
    return "--" + field.name.replace("_", "-")


def aws_name(field: FieldDescriptor) -> str:
    package = field.containing_type.file.package if field.containing_type is not None else ""
    irregular = _IRREGULAR_NAMES.get(package, {}).get(field.name)
    if irregular is not None:
        return irregular
    return "".join(part[:1].upper() + part[1:] for part in field.name.split("_"))


def _dest(field: FieldDescriptor) -> str:
    return f"field_{field.name}"


def _descriptor(message: Message) -> Descriptor:
    return cast(Descriptor, message.DESCRIPTOR)


def _fields(descriptor: Descriptor) -> list[FieldDescriptor]:
    return list(descriptor.fields)


def _message_type(field: FieldDescriptor) -> Descriptor:
    if field.message_type is None:  # pragma: no cover - only called for message fields
        raise TypeError(f"{field.full_name} is not a message field")
    return field.message_type


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.is_repeated
        and field.type == F.TYPE_MESSAGE
        and bool(_message_type(field).GetOptions().map_entry)
    )


def _map_value_field(field: FieldDescriptor) -> FieldDescriptor:
    return _message_type(field).fields_by_name["value"]


def is_required(field: FieldDescriptor) -> bool:
    """Singular string/bytes fields without presence are the required members (SecretId, Name, KeyId...)."""
    return not field.is_repeated and not field.has_presence and field.type in (F.TYPE_STRING, F.TYPE_BYTES)


# --- argparse from a request descriptor -------------------------------------------------------------------


_INT_TYPES = frozenset(
    {F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_SINT32, F.TYPE_SINT64}
)


def _metavar(field: FieldDescriptor) -> str:
    if _is_map(field):
        return "KEY=VALUE"
    if field.type == F.TYPE_MESSAGE:
        members = ",".join(f"{aws_name(f)}=..." for f in _fields(_message_type(field)))
        return members or "JSON"
    if field.type == F.TYPE_BYTES:
        return "fileb://PATH|BASE64"
    if field.type in _INT_TYPES:
        return "INTEGER"
    return "VALUE"


def add_request_arguments(parser: argparse.ArgumentParser, request: Descriptor) -> None:
    """One flag per request field: ``--<kebab field name>``, shaped by the field's type."""
    for field in request.fields:
        flag, dest = flag_name(field), _dest(field)
        if field.type == F.TYPE_BOOL and not field.is_repeated:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None)
        elif field.is_repeated:
            parser.add_argument(flag, dest=dest, nargs="+", metavar=_metavar(field), default=None)
        else:
            parser.add_argument(
                flag, dest=dest, metavar=_metavar(field), required=is_required(field), default=None
            )


# --- flag values → request ------------------------------------------------------------------------------


def _read_file(value: str, prefix: str) -> bytes:
    path = Path(value[len(prefix) :]).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"Error parsing parameter: unable to load {value}: {exc.strerror or exc}") from None


def _string(value: str) -> str:
    if value.startswith("file://"):
        return _read_file(value, "file://").decode("utf-8")
    return value


def _bytes(value: str, field: FieldDescriptor) -> bytes:
    if value.startswith("fileb://"):
        return _read_file(value, "fileb://")
    if value.startswith("file://"):
        return _read_file(value, "file://")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(
            f"Invalid base64 for {flag_name(field)}: pass base64 text or fileb://PATH for raw bytes."
        ) from None


def _int(value: object, field: FieldDescriptor) -> int:
    if isinstance(value, bool):
        raise UsageError(f"{flag_name(field)} expects an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise UsageError(f"{flag_name(field)} expects an integer, got {value!r}") from None


def _bool(value: object, field: FieldDescriptor) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise UsageError(f"{flag_name(field)} expects true or false, got {value!r}")


def _scalar(value: object, field: FieldDescriptor) -> Any:
    """A JSON/shorthand value (already a string, number or bool) as the field's Python type."""
    if field.type == F.TYPE_STRING:
        if not isinstance(value, str):
            raise UsageError(f"{field.name} expects a string, got {value!r}")
        return value
    if field.type == F.TYPE_BYTES:
        if not isinstance(value, str):
            raise UsageError(f"{field.name} expects base64 text, got {value!r}")
        return _bytes(value, field)
    if field.type == F.TYPE_BOOL:
        return _bool(value, field)
    if field.type in _INT_TYPES:
        return _int(value, field)
    raise UsageError(f"{field.name}: unsupported field type")  # pragma: no cover - not used by our protos


def _member(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    """The field a JSON/shorthand key names: AWS spelling (``Key``, ``TagKey``), any case, or snake_case."""
    wanted = key.strip().replace("-", "_").lower()
    for field in descriptor.fields:
        if wanted in (aws_name(field).lower(), field.name.replace("_", "")):
            return field
        if wanted == field.name:
            return field
    return None


def parse_shorthand(text: str, descriptor: Descriptor) -> dict[str, Any]:
    """AWS CLI shorthand for one structure: ``Key=a,Value=b``; list members take the following
    comma-separated values (``Key=name,Values=db/,prod/`` or ``Values=[db/,prod/]``)."""
    out: dict[str, Any] = {}
    current: FieldDescriptor | None = None
    for part in text.split(","):
        key, eq, value = part.partition("=")
        field = _member(descriptor, key) if eq else None
        if field is not None and field.name not in out:
            current = field
            if field.is_repeated:
                value = value[1:] if value.startswith("[") else value
                out[field.name] = [value[:-1] if value.endswith("]") else value]
            else:
                out[field.name] = value
        elif current is not None and current.is_repeated:
            out[current.name].append(part[:-1] if part.endswith("]") else part)
        elif current is not None:
            out[current.name] = f"{out[current.name]},{part}"  # a comma inside a value
        else:
            members = ", ".join(aws_name(f) for f in descriptor.fields)
            raise UsageError(f"Error parsing parameter {text!r}: expected Member=value pairs ({members}).")
    return out


def _fill(message: Message, data: Mapping[str, Any]) -> None:
    descriptor = _descriptor(message)
    for key, value in data.items():
        field = _member(descriptor, key)
        if field is None:
            members = ", ".join(aws_name(f) for f in descriptor.fields)
            raise UsageError(f"Unknown parameter {key!r} in {descriptor.name}; valid members: {members}")
        _assign(message, field, value)


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if _is_map(field):
        if not isinstance(value, Mapping):
            raise UsageError(f"{aws_name(field)} expects an object of key/value pairs")
        value_field = _map_value_field(field)
        for k, v in value.items():
            target[str(k)] = _scalar(v, value_field)
    elif field.is_repeated:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if field.type == F.TYPE_MESSAGE:
                if not isinstance(item, Mapping):
                    raise UsageError(f"{aws_name(field)} expects a list of objects")
                _fill(target.add(), item)
            else:
                target.append(_scalar(item, field))
    elif field.type == F.TYPE_MESSAGE:
        if not isinstance(value, Mapping):
            raise UsageError(f"{aws_name(field)} expects an object")
        _fill(target, value)
    else:
        setattr(message, field.name, _scalar(value, field))


def _json(text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"Error parsing parameter '{flag}': Invalid JSON: {exc}") from None


def _structures(values: Sequence[str], field: FieldDescriptor) -> list[Any]:
    """Items of a list-of-structures flag: each a shorthand item, a JSON object, or a JSON list."""
    out: list[Any] = []
    for raw in values:
        text = _string(raw).strip()
        if text.startswith("["):
            parsed = _json(text, flag_name(field))
            out.extend(parsed if isinstance(parsed, list) else [parsed])
        elif text.startswith("{"):
            out.append(_json(text, flag_name(field)))
        else:
            out.append(parse_shorthand(text, _message_type(field)))
    return out


def _pairs(values: Sequence[str], field: FieldDescriptor) -> dict[str, str]:
    """A string map: ``k=v`` items (also ``k=v,k2=v2``) or a JSON object."""
    out: dict[str, str] = {}
    for raw in values:
        text = _string(raw).strip()
        if text.startswith("{"):
            parsed = _json(text, flag_name(field))
            if not isinstance(parsed, dict):
                raise UsageError(f"{flag_name(field)} expects a JSON object")
            out.update({str(k): str(v) for k, v in parsed.items()})
            continue
        for pair in text.split(","):
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise UsageError(f"{flag_name(field)} expects KEY=VALUE pairs, got {pair!r}")
            out[key] = value
    return out


def request_from_args(request: Descriptor, args: argparse.Namespace) -> Message:
    """Build the request message from parsed flags (absent flags leave fields unset)."""
    message = message_factory.GetMessageClass(request)()
    for field in request.fields:
        value = getattr(args, _dest(field), None)
        if value is None:
            continue
        if _is_map(field):
            _assign(message, field, _pairs(value, field))
        elif field.is_repeated and field.type == F.TYPE_MESSAGE:
            _assign(message, field, _structures(value, field))
        elif field.is_repeated:
            items: list[Any] = []
            for raw in value:
                text = raw.strip()
                if text.startswith("[") and text.endswith("]"):
                    parsed = _json(text, flag_name(field))
                    items.extend(parsed if isinstance(parsed, list) else [parsed])
                else:
                    items.append(_string(raw))
            _assign(message, field, items)
        elif field.type == F.TYPE_MESSAGE:
            text = _string(value).strip()
            data = (
                _json(text, flag_name(field))
                if text.startswith("{")
                else parse_shorthand(text, _message_type(field))
            )
            _assign(message, field, data)
        elif field.type == F.TYPE_BYTES:
            setattr(message, field.name, _bytes(value, field))
        elif field.type == F.TYPE_STRING:
            setattr(message, field.name, _string(value))
        else:
            _assign(message, field, value)
    return message


# --- response → AWS-shaped JSON ---------------------------------------------------------------------------


def epoch_seconds(ts: Timestamp) -> int | float:
    """Epoch seconds as AWS's JSON protocol sends them (a number, with milliseconds when there are any)."""
    if ts.nanos == 0:
        return ts.seconds
    return round(ts.seconds + ts.nanos / 1e9, 3)


def aws_timestamp(ts: Timestamp) -> str:
    """A JSON-protocol timestamp as the AWS CLI prints it with ISO 8601 output (v2's default, v1's
    ``cli_timestamp_format = iso8601``): botocore turns the epoch seconds on the wire (milliseconds) into a
    datetime in the local time zone and the CLI prints its ``isoformat()``, e.g.
    ``2026-12-01T09:16:14.123000+00:00`` on a UTC host, ``2026-12-01T09:16:14+00:00`` on a whole second."""
    return dt.datetime.fromtimestamp(epoch_seconds(ts), tz=dt.UTC).astimezone().isoformat()


def iso_timestamp(ts: Timestamp) -> str:
    """ISO-8601 in UTC as the AWS CLI prints query-protocol timestamps (``2026-12-01T05:00:00+00:00``)."""
    return ts.ToDatetime(tzinfo=dt.UTC).isoformat()


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == F.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if (
        isinstance(value, Timestamp)
        and field.containing_type is not None
        and field.containing_type.file.package in _UTC_TIMESTAMP_PACKAGES
    ):
        return iso_timestamp(value)
    if field.type == F.TYPE_MESSAGE:
        return _message(value)
    return value


def _message(message: Message) -> Any:
    descriptor = _descriptor(message)
    if descriptor.full_name == "google.protobuf.Timestamp":
        assert isinstance(message, Timestamp)
        return aws_timestamp(message)
    if descriptor.full_name in _LIST_WRAPPERS:
        (only,) = _fields(descriptor)
        return [_value(only, v) for v in getattr(message, only.name)]
    return to_aws(message, top_level=False)


def to_aws(message: Message, *, top_level: bool = True) -> dict[str, Any]:
    """A response message as the AWS CLI's JSON: PascalCase members; optional members and sub-structures
    only when present; empty lists omitted (except the result lists of List*/Batch* operations); blobs in
    base64; timestamps as ISO 8601 text, as the AWS CLI prints them."""
    out: dict[str, Any] = {}
    for field in _fields(_descriptor(message)):
        value = getattr(message, field.name)
        name = aws_name(field)
        if _is_map(field):
            if value:
                value_field = _map_value_field(field)
                out[name] = {k: _value(value_field, v) for k, v in sorted(value.items())}
        elif field.is_repeated:
            if value or (top_level and field.name in _ALWAYS_PRINTED_LISTS):
                out[name] = [_value(field, v) for v in value]
        elif field.has_presence:
            if message.HasField(field.name):
                out[name] = _value(field, value)
        else:
            out[name] = _value(field, value)
    return out
