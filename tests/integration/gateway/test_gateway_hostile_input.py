"""Hostile input against the real kms → store → gateway stack: NUL and control characters in every string
field of every public request are refused with AWS's error (never INTERNAL); oversized requests are refused
before they are parsed (RESOURCE_EXHAUSTED) and leave the log and the error message bounded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.secrets.v1 import secrets_pb2_grpc
from coffer.rpc.status import error_info_of
from coffer.rpc.tls import GATEWAY_HOST, name_options

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = sm.DESCRIPTOR.services_by_name["SecretsManagerService"]
#: Secret values may hold any character (they are encrypted, never stored as text).
VALUE_FIELDS = frozenset({"secret_string"})


def _string_paths(
    descriptor: Descriptor, prefix: tuple[FieldDescriptor, ...] = ()
) -> Iterator[tuple[Any, ...]]:
    """Every path of fields that ends in a string field (through nested and repeated messages)."""
    for field in descriptor.fields:
        path = (*prefix, field)
        if field.type == FieldDescriptor.TYPE_STRING and field.name not in VALUE_FIELDS:
            yield path
        elif field.type == FieldDescriptor.TYPE_MESSAGE and len(prefix) < 3:
            assert field.message_type is not None
            yield from _string_paths(field.message_type, path)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _request_with(method: Any, path: tuple[FieldDescriptor, ...], value: str, secret: str) -> Message:
    """A request of ``method`` carrying ``value`` at ``path``; its other secret id, name and token are valid
    (an existing secret, a new name, a fresh token) so the request gets as far as it can."""
    cls = getattr(sm, method.input_type.name)
    request = cls()
    defaults = {
        "secret_id": secret,
        "name": f"hostile/{uuid.uuid4().hex}",
        "client_request_token": str(uuid.uuid4()),
    }
    for field in method.input_type.fields:
        if field.name in defaults and field is not path[0] and field.type == FieldDescriptor.TYPE_STRING:
            setattr(request, field.name, defaults[field.name])
    target: Any = request
    for field in path[:-1]:
        member = getattr(target, field.name)
        target = member.add() if _is_repeated(field) else member
    last = path[-1]
    if _is_repeated(last):
        getattr(target, last.name).append(value)
    else:
        setattr(target, last.name, value)
    return request  # type: ignore[no-any-return]


def _hostile(field: FieldDescriptor, char: str) -> str:
    """A value that is otherwise valid-looking for its field (a token of the right length, ...)."""
    if "token" in field.name:
        return str(uuid.uuid4())[:-1] + char
    return "a" + char + "b"


async def test_control_characters_in_every_string_field_are_refused_not_internal(stack: Any) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=stack.ca_file.read_bytes())
    metadata: tuple[tuple[str, str], ...] = ()  # the channel signs each call
    async with grpc.aio.secure_channel(
        stack.endpoint, creds, options=name_options(GATEWAY_HOST), interceptors=[stack.signer()]
    ) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        await stub.CreateSecret(
            sm.CreateSecretRequest(
                name="hostile/base", secret_string="x", client_request_token=str(uuid.uuid4())
            ),
            metadata=metadata,
        )
        failures: list[str] = []
        tried = 0
        for method in SERVICE.methods:
            call = getattr(stub, method.name)
            for path in _string_paths(method.input_type):
                for char in ("\x00", "\x1b"):
                    request = _request_with(method, path, _hostile(path[-1], char), "hostile/base")
                    tried += 1
                    where = f"{method.name}.{'.'.join(f.name for f in path)} {char!r}"
                    try:
                        if method.server_streaming:  # WatchSecrets: its first message or its refusal
                            stream = call(request, metadata=metadata, timeout=10)
                            try:
                                await stream.read()
                            finally:
                                stream.cancel()
                        else:
                            await call(request, metadata=metadata, timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                            failures.append(f"{where}: {exc.code().name} {exc.details()}")
                        elif error_info_of(exc) is None:
                            failures.append(f"{where}: {exc.code().name} without an AWS error name")
        assert tried > 50
        assert not failures, "\n".join(failures)


async def test_control_characters_in_create_secret_fields_are_validation_errors(stack: Any) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=stack.ca_file.read_bytes())
    metadata: tuple[tuple[str, str], ...] = ()  # the channel signs each call
    token = str(uuid.uuid4())
    requests = {
        "description": sm.CreateSecretRequest(name="h/d", description="a\x00b"),
        "kmsKeyId": sm.CreateSecretRequest(name="h/k", kms_key_id="alias/a\x00"),
        "clientRequestToken": sm.CreateSecretRequest(name="h/t", client_request_token=token[:-1] + "\x00"),
        "tags.1.member.key": sm.CreateSecretRequest(name="h/g", tags=[sm.Tag(key="k\x01", value="v")]),
        "tags.1.member.value": sm.CreateSecretRequest(name="h/v", tags=[sm.Tag(key="k", value="v\x00")]),
    }
    async with grpc.aio.secure_channel(
        stack.endpoint, creds, options=name_options(GATEWAY_HOST), interceptors=[stack.signer()]
    ) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        for member, request in requests.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreateSecret(request, metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, member
            reason = error_info_of(info.value)
            assert reason is not None and reason.reason == "ValidationException", member
            details = info.value.details() or ""
            assert f"at '{member}' failed to satisfy constraint" in details, details
            assert "\x00" not in details and "\x01" not in details
