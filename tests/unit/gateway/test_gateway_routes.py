"""The gateway's route table against the proto descriptors, and the handlers built from it (fakes only)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core import errors
from coffer.gateway.app import GatewayApp
from coffer.gateway.servicer import (
    FORWARD_TIMEOUT_SECONDS,
    PUBLIC_SERVICES,
    ROUTES,
    Forward,
    Local,
    full_method,
    gateway_handlers,
    public_event_sources,
)
from coffer.rpc import context as ctx

ACTION_PREFIX = {
    "coffer.api.secrets.v1.SecretsManagerService": "secretsmanager",
    "coffer.api.kms.v1.KeyManagementService": "kms",
    "coffer.api.kms.v1.SealService": "kms",
    "coffer.api.iam.v1.IdentityManagementService": "iam",
    "coffer.api.iam.v1.SecurityTokenService": "sts",
    "coffer.api.iam.v1.OrganizationsService": "organizations",
    "coffer.api.usage.v1.UsageService": "coffer",
    "coffer.api.audit.v1.AuditService": "cloudtrail",
}


def public_methods() -> list[Any]:
    return [method for service in PUBLIC_SERVICES for method in service.methods]


def test_every_public_rpc_has_a_route() -> None:
    missing = [full_method(m) for m in public_methods() if full_method(m) not in ROUTES]
    assert missing == [], f"public RPCs without an IAM action in ROUTES: {missing}"


def test_every_route_names_a_public_rpc() -> None:
    served = {full_method(m) for m in public_methods()}
    assert sorted(set(ROUTES) - served) == []


@pytest.mark.parametrize("method", public_methods(), ids=lambda m: m.name)
def test_route_matches_the_descriptor(method: Any) -> None:
    route = ROUTES[full_method(method)]
    assert route.action == f"{ACTION_PREFIX[method.containing_service.full_name]}:{method.name}"
    assert not method.client_streaming
    # The one server stream is the change stream, forwarded (never answered by the gateway).
    assert method.server_streaming == (method.name == "WatchSecrets")
    if route.resource is not None:
        fields = method.input_type.fields_by_name
        assert route.resource in fields, f"{method.input_type.full_name} has no field {route.resource}"
        assert fields[route.resource].type == FieldDescriptor.TYPE_STRING
    if isinstance(route.target, Forward):
        downstream = descriptor_pool.Default().FindServiceByName(route.target.downstream.value)
        target = downstream.methods_by_name[route.target.method]
        assert target.input_type is method.input_type
        assert target.output_type is method.output_type
    else:
        assert isinstance(route.target, Local)


def test_a_method_without_a_route_is_refused_at_start() -> None:
    app = GatewayApp(authorize=lambda *_: None, audit=RecordingAudit(), random=random.Random(1))
    routes = {k: v for k, v in ROUTES.items() if not k.endswith("/GetSecretValue")}
    with pytest.raises(LookupError, match="GetSecretValue"):
        gateway_handlers(app, store=FakeStub(), kms=FakeStub(), routes=routes)  # type: ignore[arg-type]


# --- the built handlers ------------------------------------------------------------------------------


@dataclass
class RecordingAudit:
    lines: list[dict[str, Any]] = field(default_factory=list)

    def record(self, **kw: Any) -> None:
        self.lines.append(kw)


@dataclass
class FakeStub:
    """Any attribute is a downstream method that records (method, request, timeout) and answers."""

    calls: list[tuple[str, Any, float]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        async def call(request: Any, *, timeout: float) -> Any:  # noqa: ASYNC109 - a stub's signature
            self.calls.append((name, request, timeout))
            return f"{name}-response"

        return call


@dataclass
class FakeContext:
    remaining: float | None

    def time_remaining(self) -> float | None:
        return self.remaining


@dataclass
class Harness:
    store: FakeStub
    kms: FakeStub
    audit: RecordingAudit
    handlers: dict[str, dict[str, Any]]

    async def call(self, service: str, method: str, request: Any, *, remaining: float | None = None) -> Any:
        handler = self.handlers[service][method]
        raw = handler.request_deserializer(request.SerializeToString())
        token = ctx.principal_var.set("user/alice")
        try:
            return await handler.unary_unary(raw, FakeContext(remaining))
        finally:
            ctx.principal_var.reset(token)


SM = "coffer.api.secrets.v1.SecretsManagerService"
KMS = "coffer.api.kms.v1.KeyManagementService"


@pytest.fixture
def harness() -> Harness:
    audit = RecordingAudit()
    app = GatewayApp(authorize=lambda *_: None, audit=audit, random=random.Random(1))
    store, kms = FakeStub(), FakeStub()
    handlers = gateway_handlers(app, store=store, kms=kms)  # type: ignore[arg-type]
    return Harness(store=store, kms=kms, audit=audit, handlers=handlers)


async def test_get_secret_value_is_forwarded_unchanged_and_audited(harness: Harness) -> None:
    request = sm.GetSecretValueRequest(secret_id="db/x", version_stage="AWSCURRENT")
    assert await harness.call(SM, "GetSecretValue", request) == "GetSecretValue-response"
    assert harness.store.calls == [("GetSecretValue", request, FORWARD_TIMEOUT_SECONDS)]
    assert harness.kms.calls == []
    assert harness.audit.lines == [
        {
            "principal": "user/alice",
            "action": "secretsmanager:GetSecretValue",
            "resource": "db/x",
            "request_id": None,
            "outcome": "allowed",
        }
    ]


async def test_the_callers_deadline_caps_the_forward_timeout(harness: Harness) -> None:
    await harness.call(KMS, "DescribeKey", kms_pb2.DescribeKeyRequest(key_id="k"), remaining=2.5)
    await harness.call(KMS, "ListKeys", kms_pb2.ListKeysRequest(), remaining=0.0)
    assert [(name, timeout) for name, _, timeout in harness.kms.calls] == [
        ("DescribeKey", 2.5),
        ("ListKeys", 0.001),
    ]
    assert [line["resource"] for line in harness.audit.lines] == ["k", "*"]


async def test_resources_joined_or_any(harness: Harness) -> None:
    await harness.call(SM, "BatchGetSecretValue", sm.BatchGetSecretValueRequest(secret_id_list=["a", "b"]))
    await harness.call(SM, "BatchGetSecretValue", sm.BatchGetSecretValueRequest())
    await harness.call(SM, "GetSecretValue", sm.GetSecretValueRequest())
    await harness.call(SM, "CreateSecret", sm.CreateSecretRequest(name="new/one"))
    await harness.call(SM, "DeleteRotationFunction", sm.DeleteRotationFunctionRequest(function_id="f1"))
    await harness.call(
        KMS, "CreateAlias", kms_pb2.CreateAliasRequest(alias_name="alias/a", target_key_id="k")
    )
    assert [(line["action"], line["resource"]) for line in harness.audit.lines] == [
        ("secretsmanager:BatchGetSecretValue", "a,b"),
        ("secretsmanager:BatchGetSecretValue", "*"),
        ("secretsmanager:GetSecretValue", "*"),
        ("secretsmanager:CreateSecret", "new/one"),
        ("secretsmanager:DeleteRotationFunction", "f1"),
        ("kms:CreateAlias", "alias/a"),
    ]


async def test_get_random_password_is_answered_locally(harness: Harness) -> None:
    response = await harness.call(SM, "GetRandomPassword", sm.GetRandomPasswordRequest(password_length=12))
    assert len(response.random_password) == 12
    assert harness.store.calls == [] and harness.kms.calls == []
    assert harness.audit.lines[0]["action"] == "secretsmanager:GetRandomPassword"
    assert harness.audit.lines[0]["resource"] == "*"


async def test_a_refused_call_is_not_forwarded() -> None:
    audit = RecordingAudit()

    def deny(principal: str | None, action: str, resource: str) -> None:
        raise errors.AccessDenied("no")

    app = GatewayApp(authorize=deny, audit=audit, random=random.Random(1))
    store = FakeStub()
    handlers = gateway_handlers(app, store=store, kms=FakeStub())  # type: ignore[arg-type]
    h = Harness(store=store, kms=FakeStub(), audit=audit, handlers=handlers)
    with pytest.raises(errors.AccessDenied):
        await h.call(SM, "PutSecretValue", sm.PutSecretValueRequest(secret_id="s", secret_string="v"))
    assert store.calls == []
    assert audit.lines[0]["outcome"] == "denied"


def test_every_public_service_has_an_audit_event_source() -> None:
    sources = public_event_sources()
    assert sources["coffer.api.secrets.v1.SecretsManagerService"] == "secretsmanager.amazonaws.com"
    assert sources["coffer.api.kms.v1.SealService"] == "kms.amazonaws.com"
    assert sources["coffer.api.audit.v1.AuditService"] == "cloudtrail.amazonaws.com"
    assert set(sources) == {s.full_name for s in PUBLIC_SERVICES}


class FakeStreamCall:
    """What a downstream stub's server-streaming method returns: its messages, and a cancel."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.cancelled = False

    def __aiter__(self) -> Any:
        return self._iterate()

    async def _iterate(self) -> Any:
        for item in self.items:
            yield item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


@dataclass
class StreamingStore(FakeStub):
    streams: list[tuple[Any, float | None, FakeStreamCall]] = field(default_factory=list)

    def WatchSecrets(self, request: Any, *, timeout: float | None) -> FakeStreamCall:
        call = FakeStreamCall(["first", "second", "third"])
        self.streams.append((request, timeout, call))
        return call


async def test_watch_secrets_is_forwarded_as_a_stream_audited_once_and_cancelled_when_left() -> None:
    audit = RecordingAudit()
    app = GatewayApp(authorize=lambda *_: None, audit=audit, random=random.Random(1))
    store = StreamingStore()
    handlers = gateway_handlers(app, store=store, kms=FakeStub())  # type: ignore[arg-type]
    handler = handlers[SM]["WatchSecrets"]
    assert handler.unary_stream is not None and handler.unary_unary is None
    request = sm.WatchSecretsRequest(name_prefix="app/")
    token = ctx.principal_var.set("user/alice")
    try:
        stream = handler.unary_stream(
            handler.request_deserializer(request.SerializeToString()), FakeContext(None)
        )
        assert await anext(stream) == "first"
        assert await anext(stream) == "second"
        await stream.aclose()  # the client went away
    finally:
        ctx.principal_var.reset(token)
    ((forwarded, timeout, call),) = store.streams
    assert forwarded == request and timeout is None  # no forward timeout on a stream
    assert call.cancelled
    assert [(line["action"], line["outcome"]) for line in audit.lines] == [
        ("secretsmanager:WatchSecrets", "allowed")
    ]


async def test_a_refused_watch_is_not_forwarded() -> None:
    audit = RecordingAudit()

    def deny(principal: str | None, action: str, resource: str) -> None:
        raise errors.AccessDenied(f"not {action}")

    app = GatewayApp(authorize=deny, audit=audit, random=random.Random(1))
    store = StreamingStore()
    handler = gateway_handlers(app, store=store, kms=FakeStub())[SM]["WatchSecrets"]  # type: ignore[arg-type]
    stream = handler.unary_stream(sm.WatchSecretsRequest(), FakeContext(None))
    with pytest.raises(errors.AccessDenied):
        await anext(stream)
    assert store.streams == []
    assert [line["outcome"] for line in audit.lines] == ["denied"]
