"""AWS JSON 1.1 ⇄ the public protobuf messages, for every Secrets Manager and KMS operation Coffer serves.

SEAM (issue 10): the one place that translates. Member names follow the rule in secrets.proto (an AWS member
is the PascalCase of the snake_case field, with the exceptions AWS spells otherwise, e.g. ``ARN``);
timestamps are epoch seconds with fractions; blobs standard base64 with padding.

Each message type gets a *plan* once (cached by descriptor): the member name, the converter and the
presence rule of every field, so the hot path (GetSecretValue) runs a short loop of precomputed closures
instead of ``json_format``'s generic descriptor walk.

Protocol rules, as AWS's (Coral) JSON 1.1 services apply them:

- the body must be a JSON object; a member of the wrong JSON type (a string for a number, a float or a bool
  for an integer, an object for a string, bad base64 for a blob, …) is a ``SerializationException`` naming
  the member;
- ``null`` is the same as an absent member; an absent member leaves the field unset (proto3 ``optional``
  presence is kept);
- members the operation does not have are ignored, whatever their type — AWS ignores unknown members (the
  SDKs rely on it: a newer client may send members an older server does not know, e.g. KMS's
  ``GrantTokens``/``DryRun``, which Coffer does not model).

Responses omit unset optional members and unset messages (AWS omits absent members rather than sending
``null``), keep lists even when empty (``VersionStages: []``), except the few lists AWS omits when empty
(``_OMIT_WHEN_EMPTY``), and omit empty maps.
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Final, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2
from coffer.core import errors

#: AWS's target prefix of each service (``X-Amz-Target: <prefix>.<Operation>``).
_SERVICES: Final[tuple[tuple[str, ServiceDescriptor], ...]] = (
    ("secretsmanager", secrets_pb2.DESCRIPTOR.services_by_name["SecretsManagerService"]),
    ("TrentService", kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]),
)

#: Coffer's own methods, which AWS does not have: not served over AWS's protocol (no AWS client can call
#: them, and a future AWS operation of the same name would have other shapes). They stay on the gRPC API.
COFFER_ONLY: Final[frozenset[str]] = frozenset(
    {
        "/coffer.api.secrets.v1.SecretsManagerService/ListRotationAttempts",
        "/coffer.api.secrets.v1.SecretsManagerService/RegisterRotationFunction",
        "/coffer.api.secrets.v1.SecretsManagerService/ListRotationFunctions",
        "/coffer.api.secrets.v1.SecretsManagerService/DeleteRotationFunction",
        # A server stream: served over this endpoint as a long poll instead (``longpoll``).
        "/coffer.api.secrets.v1.SecretsManagerService/WatchSecrets",
    }
)


def _targets() -> dict[str, str]:
    targets: dict[str, str] = {}
    for prefix, service in _SERVICES:
        for method in service.methods:
            full = f"/{service.full_name}/{method.name}"
            if full not in COFFER_ONLY:
                targets[f"{prefix}.{method.name}"] = full
    return targets


#: ``X-Amz-Target`` → full gRPC method name of the public operation it runs
#: (``secretsmanager.GetSecretValue`` → ``/coffer.api.secrets.v1.SecretsManagerService/GetSecretValue``).
TARGETS: Mapping[str, str] = _targets()


def request_descriptor(target: str) -> Descriptor:
    """The request message of ``target`` (a key of TARGETS), as the endpoint decodes its body."""
    service_name, _, method = TARGETS[target].strip("/").partition("/")
    for _prefix, service in _SERVICES:
        if service.full_name == service_name:
            return service.methods_by_name[method].input_type
    raise KeyError(target)


#: Members AWS does not spell as the PascalCase of the field, per proto package (KMS spells ``Arn``, Secrets
#: Manager ``ARN``).
_MEMBER_EXCEPTIONS: Final[Mapping[str, Mapping[str, str]]] = {
    "coffer.api.secrets.v1": {"arn": "ARN", "rotation_lambda_arn": "RotationLambdaARN"},
    "coffer.api.kms.v1": {"aws_account_id": "AWSAccountId"},
}

#: Messages that wrap one repeated field only to carry presence (or to be a map's value): on the wire they
#: are that list (``Tags``: present once the secret was ever tagged, possibly ``[]``; ``VersionStages`` as
#: the values of ``VersionIdsToStages``).
_LIST_WRAPPERS: Final[frozenset[str]] = frozenset(
    {"coffer.api.secrets.v1.TagSet", "coffer.api.secrets.v1.VersionStages"}
)

#: Repeated response fields AWS leaves out when there is nothing in them (every other list is sent, ``[]``
#: included): CreateSecret and DescribeSecret of a secret that is not replicated have no
#: ``ReplicationStatus``.
_OMIT_WHEN_EMPTY: Final[frozenset[str]] = frozenset(
    {
        "coffer.api.secrets.v1.CreateSecretResponse.replication_status",
        "coffer.api.secrets.v1.DescribeSecretResponse.replication_status",
    }
)

_TIMESTAMP: Final = Timestamp.DESCRIPTOR.full_name
#: The value range of each protobuf integer type (also what the fuzzer generates within).
INT_RANGES: Final[Mapping[int, tuple[int, int]]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def member_name(field: FieldDescriptor) -> str:
    """AWS's member name of a field: the exception table's, else the PascalCase of the snake_case name."""
    assert field.containing_type is not None
    package = field.containing_type.file.package
    special = _MEMBER_EXCEPTIONS.get(package, {}).get(field.name)
    if special is not None:
        return special
    return "".join(part[:1].upper() + part[1:] for part in field.name.split("_"))


# ---------------------------------------------------------------------------------------------------- errors


class _BadValue(Exception):
    """A member's value has the wrong JSON type; ``path`` grows (innermost first) on the way out."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.path: list[str] = []


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _serialization_error(bad: _BadValue) -> errors.Validation:
    path = "".join(reversed(bad.path)).lstrip(".")
    return errors.Validation(
        f"Member '{path}' must be {bad.expected}, not {_json_type(bad.value)}.", code="SerializationException"
    )


# ---------------------------------------------------------------------------------------------- JSON → proto

Decode = Callable[[Any], Any]


def _decode_str(value: Any) -> str:
    if type(value) is not str:
        raise _BadValue("a string", value)
    return value


def _decode_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _BadValue("a boolean", value)
    return value


def _int_decoder(low: int, high: int) -> Decode:
    def decode(value: Any) -> int:
        if type(value) is not int:
            raise _BadValue("an integer", value)
        if not low <= value <= high:
            raise _BadValue(f"an integer from {low} to {high}", value)
        return value

    return decode


def _decode_float(value: Any) -> float:
    if type(value) is not int and type(value) is not float:
        raise _BadValue("a number", value)
    return float(value)


def _decode_bytes(value: Any) -> bytes:
    if type(value) is not str:
        raise _BadValue("a base64-encoded string", value)
    try:
        return b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _BadValue("standard base64 with padding", value) from None


def _decode_timestamp(value: Any) -> Timestamp:
    if type(value) is not int and type(value) is not float:
        raise _BadValue("a timestamp in epoch seconds (a number)", value)
    # Decimal of the shortest repr: 1523477145.729 gives 729000000 ns, not the binary float's 729000092.
    exact = Decimal(repr(value)) if type(value) is float else Decimal(value)
    if not exact.is_finite():
        raise _BadValue("a finite number of epoch seconds", value)
    seconds = int(exact.to_integral_value(rounding=ROUND_FLOOR))
    nanos = int((exact - seconds) * 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def _enum_decoder(field: FieldDescriptor) -> Decode:
    assert field.enum_type is not None
    numbers = {value.name: value.number for value in field.enum_type.values}

    def decode(value: Any) -> int:
        if type(value) is not str:
            raise _BadValue("a string", value)
        number = numbers.get(value)
        if number is None:
            raise errors.Validation(
                f"1 validation error detected: Value '{value}' at '{member_name(field)}' failed to satisfy "
                f"constraint: Member must satisfy enum value set: [{', '.join(numbers)}]"
            )
        return number

    return decode


def _list_decoder(item: Decode) -> Decode:
    def decode(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _BadValue("a list", value)
        index = 0
        try:
            out = []
            for index, element in enumerate(value):  # noqa: B007 - index names the element in the error
                out.append(item(element))
            return out
        except _BadValue as bad:
            bad.path.append(f"[{index}]")
            raise

    return decode


def _map_decoder(value_decode: Decode) -> Decode:
    def decode(value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise _BadValue("an object", value)
        out = {}
        for key, element in value.items():
            try:
                out[key] = value_decode(element)
            except _BadValue as bad:
                bad.path.append(f".{key}")
                raise
        return out

    return decode


def _value_decoder(field: FieldDescriptor) -> Decode:
    """The decoder of one (non-repeated) value of ``field``'s type."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message = field.message_type
        assert message is not None
        if message.full_name == _TIMESTAMP:
            return _decode_timestamp
        if message.full_name in _LIST_WRAPPERS:
            return _wrapper_decoder(message)
        return _message_decoder(message)
    if field.type == FieldDescriptor.TYPE_STRING:
        return _decode_str
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _decode_bool
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _decode_bytes
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _decode_float
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum_decoder(field)
    low, high = INT_RANGES[field.type]
    return _int_decoder(low, high)


def _field_decoder(field: FieldDescriptor) -> Decode:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return _map_decoder(_value_decoder(field.message_type.fields_by_name["value"]))
    item = _value_decoder(field)
    if field.is_repeated:
        return _list_decoder(item)
    return item


def _wrapper_decoder(message: Descriptor) -> Decode:
    (inner,) = message.fields
    cls = GetMessageClass(message)
    items = _list_decoder(_value_decoder(inner))
    name = inner.name

    def decode(value: Any) -> Message:
        return cls(**{name: items(value)})

    return decode


@dataclass(slots=True)
class _RequestPlan:
    cls: type[Message]
    #: member → (field name, decoder); filled after creation so recursive messages terminate.
    fields: dict[str, tuple[str, Decode]]


_REQUEST_PLANS: dict[str, _RequestPlan] = {}


def _request_plan(message: Descriptor) -> _RequestPlan:
    plan = _REQUEST_PLANS.get(message.full_name)
    if plan is None:
        plan = _RequestPlan(GetMessageClass(message), {})
        _REQUEST_PLANS[message.full_name] = plan
        plan.fields.update({member_name(f): (f.name, _field_decoder(f)) for f in message.fields})
    return plan


def _decode_object(plan: _RequestPlan, value: Any) -> Message:
    if type(value) is not dict:
        raise _BadValue("an object", value)
    kwargs: dict[str, Any] = {}
    fields = plan.fields
    for member, element in value.items():
        entry = fields.get(member)
        if entry is None or element is None:
            continue  # unknown members are ignored, as AWS does; null is absent
        try:
            kwargs[entry[0]] = entry[1](element)
        except _BadValue as bad:
            bad.path.append(f".{member}")
            raise
    return plan.cls(**kwargs)


def _message_decoder(message: Descriptor) -> Decode:
    full_name = message.full_name

    def decode(value: Any) -> Message:
        plan = _REQUEST_PLANS.get(full_name) or _request_plan(message)
        return _decode_object(plan, value)

    return decode


def request_from_json(request_class: type[Message], body: Any) -> Message:
    """The request message of a parsed JSON body; raises ``errors.Validation``-class errors with AWS's
    code (``SerializationException`` for a wrong JSON type, ``ValidationException`` …) for input AWS
    refuses at the protocol level."""
    descriptor = cast(Descriptor, request_class.DESCRIPTOR)
    plan = _REQUEST_PLANS.get(descriptor.full_name) or _request_plan(descriptor)
    if type(body) is not dict:
        raise errors.Validation(
            f"The request body must be a JSON object, not {_json_type(body)}.", code="SerializationException"
        )
    try:
        return _decode_object(plan, body)
    except _BadValue as bad:
        raise _serialization_error(bad) from None


# ---------------------------------------------------------------------------------------------- proto → JSON

Encode = Callable[[Any], Any]


def _encode_identity(value: Any) -> Any:
    return value


def _encode_bytes(value: bytes) -> str:
    return b64encode(value).decode("ascii")


def _encode_timestamp(value: Timestamp) -> int | float:
    nanos = value.nanos
    return value.seconds + nanos / 1_000_000_000 if nanos else value.seconds


def _value_encoder(field: FieldDescriptor) -> Encode:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message = field.message_type
        assert message is not None
        if message.full_name == _TIMESTAMP:
            return _encode_timestamp
        if message.full_name in _LIST_WRAPPERS:
            (inner,) = message.fields
            name = inner.name
            items = _list_encoder(_value_encoder(inner))
            return lambda value: items(getattr(value, name))
        return _message_encoder(message)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _encode_bytes
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        names = {value.number: value.name for value in field.enum_type.values}
        return lambda value: names.get(value, value)
    return _encode_identity


def _copy_list(value: Any) -> list[Any]:
    # A slice of a repeated scalar field is a plain list, made about twice as fast as list(value) by upb.
    return value[:]  # type: ignore[no-any-return]


def _list_encoder(item: Encode) -> Encode:
    return lambda value: [item(element) for element in value]


def _map_encoder(item: Encode) -> Encode:
    return lambda value: {key: item(element) for key, element in value.items()}


#: How a field appears in a response: always, only when set (presence), or only when not empty.
_ALWAYS, _WHEN_SET, _WHEN_NOT_EMPTY = 0, 1, 2


@dataclass(slots=True)
class _ResponsePlan:
    #: (field name, member, when, encoder of the whole field value); filled after creation (recursion).
    fields: list[tuple[str, str, int, Encode]]


_RESPONSE_PLANS: dict[str, _ResponsePlan] = {}


def _response_plan(message: Descriptor) -> _ResponsePlan:
    plan = _RESPONSE_PLANS.get(message.full_name)
    if plan is not None:
        return plan
    plan = _ResponsePlan([])
    _RESPONSE_PLANS[message.full_name] = plan
    for field in message.fields:
        member = member_name(field)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_encode = _value_encoder(field.message_type.fields_by_name["value"])
            plan.fields.append((field.name, member, _WHEN_NOT_EMPTY, _map_encoder(value_encode)))
        elif field.is_repeated:
            item = _value_encoder(field)
            when = _WHEN_NOT_EMPTY if field.full_name in _OMIT_WHEN_EMPTY else _ALWAYS
            if item is _encode_identity:
                plan.fields.append((field.name, member, when, _copy_list))
            else:
                plan.fields.append((field.name, member, when, _list_encoder(item)))
        else:
            when = _WHEN_SET if field.has_presence else _ALWAYS
            plan.fields.append((field.name, member, when, _value_encoder(field)))
    return plan


def _encode_object(plan: _ResponsePlan, message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, member, when, encode in plan.fields:
        if when == _WHEN_SET:
            if not message.HasField(name):
                continue
            out[member] = encode(getattr(message, name))
        else:
            value = getattr(message, name)
            if when == _WHEN_NOT_EMPTY and not value:
                continue
            out[member] = encode(value)
    return out


def _message_encoder(message: Descriptor) -> Encode:
    full_name = message.full_name

    def encode(value: Message) -> dict[str, Any]:
        plan = _RESPONSE_PLANS.get(full_name) or _response_plan(message)
        return _encode_object(plan, value)

    return encode


def response_to_json(response: Message) -> dict[str, Any]:
    """The JSON object AWS sends for this response message."""
    descriptor = cast(Descriptor, response.DESCRIPTOR)
    plan = _RESPONSE_PLANS.get(descriptor.full_name) or _response_plan(descriptor)
    return _encode_object(plan, response)
