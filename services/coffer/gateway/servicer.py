"""The public gRPC API of Coffer: ``coffer.api.secrets.v1.SecretsManagerService`` and
``coffer.api.kms.v1.KeyManagementService``, driven by ONE table.

``ROUTES`` maps every public method to its IAM-style action, the request field that names the resource it
touches, and what runs it: a downstream stub method (the store or the kms) that receives the request
unchanged, or a handler answered here. Each call goes through ``GatewayApp.call`` (authorize → run → audit);
the caller's principal and the request id go along as metadata (``coffer.rpc.channel``). The servicers are
built from the table and the proto descriptors; a method of a public service without a route is never
served (``gateway_handlers`` refuses to start), and a unit test checks the table against the descriptors.
"""

from __future__ import annotations

import contextlib
import enum
import operator
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import grpc
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from coffer.api.audit.v1 import audit_pb2
from coffer.api.iam.v1 import iam_pb2
from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.store.v1 import store_pb2, store_pb2_grpc
from coffer.api.usage.v1 import usage_pb2, usage_pb2_grpc
from coffer.audit_trail import ACTION_SOURCES
from coffer.core import errors
from coffer.core.password import DEFAULT_LENGTH, PasswordRequest
from coffer.gateway.app import GatewayApp, TrailCall
from coffer.gateway.authz import ANY_RESOURCE
from coffer.rpc.context import current_principal, current_request_id
from coffer.rpc.status import from_rpc_error

#: Upper bound on one forwarded call (the store's own KMS calls and SQL happen inside it).
FORWARD_TIMEOUT_SECONDS = 30.0

Context: TypeAlias = grpc.aio.ServicerContext
Run: TypeAlias = Callable[[], Awaitable[Any]]

#: The public services the gateway serves, in registration order.
PUBLIC_SERVICES: Final[tuple[ServiceDescriptor, ...]] = (
    sm.DESCRIPTOR.services_by_name["SecretsManagerService"],
    kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"],
    kms_pb2.DESCRIPTOR.services_by_name["SealService"],
    iam_pb2.DESCRIPTOR.services_by_name["IdentityManagementService"],
    iam_pb2.DESCRIPTOR.services_by_name["SecurityTokenService"],
    iam_pb2.DESCRIPTOR.services_by_name["OrganizationsService"],
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
)


class Downstream(enum.Enum):
    """The internal services the gateway forwards to (value: the full service name)."""

    STORE = store_pb2.DESCRIPTOR.services_by_name["SecretStoreService"].full_name
    KMS = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"].full_name
    SEAL = kms_pb2.DESCRIPTOR.services_by_name["SealService"].full_name
    # Served by the store (issue 9): the public messages, forwarded unchanged.
    IAM = iam_pb2.DESCRIPTOR.services_by_name["IdentityManagementService"].full_name
    STS = iam_pb2.DESCRIPTOR.services_by_name["SecurityTokenService"].full_name
    ORGANIZATIONS = iam_pb2.DESCRIPTOR.services_by_name["OrganizationsService"].full_name
    USAGE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name
    #: The store's audit trail API (LookupEvents).
    AUDIT = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request unchanged to ``downstream``'s ``method``, within the caller's deadline (at most
    FORWARD_TIMEOUT_SECONDS)."""

    downstream: Downstream
    method: str


@dataclass(frozen=True, slots=True)
class Local:
    """Answered by the gateway itself: ``prepare(app, request)`` reads the request and returns the run."""

    prepare: Callable[[GatewayApp, Any], Run]


@dataclass(frozen=True, slots=True)
class Route:
    #: The IAM action checked and audited, ``service:Operation``.
    action: str
    #: The request field naming the resource (a repeated field is joined with ","), or None: ``*``.
    resource: str | None
    target: Forward | Local


def password_request(request: sm.GetRandomPasswordRequest) -> PasswordRequest:
    """Proto → domain, applying the AWS defaults to absent fields."""

    # Absent booleans read as False, which is their default; only RequireEachIncludedType defaults to True.
    return PasswordRequest(
        password_length=request.password_length if request.HasField("password_length") else DEFAULT_LENGTH,
        exclude_characters=request.exclude_characters,
        exclude_numbers=request.exclude_numbers,
        exclude_punctuation=request.exclude_punctuation,
        exclude_uppercase=request.exclude_uppercase,
        exclude_lowercase=request.exclude_lowercase,
        include_space=request.include_space,
        require_each_included_type=(
            request.require_each_included_type if request.HasField("require_each_included_type") else True
        ),
    )


def _random_password(app: GatewayApp, request: sm.GetRandomPasswordRequest) -> Run:
    """GetRandomPassword: generated here, never forwarded, stored or logged."""
    policy = password_request(request)

    async def run() -> sm.GetRandomPasswordResponse:
        return sm.GetRandomPasswordResponse(random_password=await app.random_password(policy))

    return run


def _store(method: str) -> Forward:
    return Forward(Downstream.STORE, method)


def _kms(method: str) -> Forward:
    return Forward(Downstream.KMS, method)


_SM = "/coffer.api.secrets.v1.SecretsManagerService/"
_KMS = "/coffer.api.kms.v1.KeyManagementService/"
_SEAL = "/coffer.api.kms.v1.SealService/"


def _seal(method: str) -> Forward:
    return Forward(Downstream.SEAL, method)


_IAM = "/coffer.api.iam.v1.IdentityManagementService/"
_STS = "/coffer.api.iam.v1.SecurityTokenService/"
_ORG = "/coffer.api.iam.v1.OrganizationsService/"


def _iam_routes() -> dict[str, Route]:
    """IdentityManagementService: ``iam:<Method>`` on the user or role the request names (the store
    decides)."""
    out: dict[str, Route] = {}
    method: MethodDescriptor
    for method in iam_pb2.DESCRIPTOR.services_by_name["IdentityManagementService"].methods:
        fields = method.input_type.fields_by_name
        resource = next((f for f in ("user_name", "role_name") if f in fields), None)
        out[_IAM + method.name] = Route(f"iam:{method.name}", resource, Forward(Downstream.IAM, method.name))
    return out


_AUDIT = "/coffer.api.audit.v1.AuditService/"


def _audit(method: str) -> Forward:
    return Forward(Downstream.AUDIT, method)


#: Full method → (IAM action, resource field, target). The kms refuses the gateway's crypto and
#: configuration calls on the AWS-managed default key itself.
ROUTES: Final[Mapping[str, Route]] = {
    # SecretsManagerService
    _SM + "CreateSecret": Route("secretsmanager:CreateSecret", "name", _store("CreateSecret")),
    _SM + "DescribeSecret": Route("secretsmanager:DescribeSecret", "secret_id", _store("DescribeSecret")),
    _SM + "GetSecretValue": Route("secretsmanager:GetSecretValue", "secret_id", _store("GetSecretValue")),
    _SM + "BatchGetSecretValue": Route(
        "secretsmanager:BatchGetSecretValue", "secret_id_list", _store("BatchGetSecretValue")
    ),
    _SM + "PutSecretValue": Route("secretsmanager:PutSecretValue", "secret_id", _store("PutSecretValue")),
    _SM + "UpdateSecret": Route("secretsmanager:UpdateSecret", "secret_id", _store("UpdateSecret")),
    _SM + "UpdateSecretVersionStage": Route(
        "secretsmanager:UpdateSecretVersionStage", "secret_id", _store("UpdateSecretVersionStage")
    ),
    _SM + "ListSecrets": Route("secretsmanager:ListSecrets", None, _store("ListSecrets")),
    _SM + "ListSecretVersionIds": Route(
        "secretsmanager:ListSecretVersionIds", "secret_id", _store("ListSecretVersionIds")
    ),
    _SM + "DeleteSecret": Route("secretsmanager:DeleteSecret", "secret_id", _store("DeleteSecret")),
    _SM + "RestoreSecret": Route("secretsmanager:RestoreSecret", "secret_id", _store("RestoreSecret")),
    _SM + "TagResource": Route("secretsmanager:TagResource", "secret_id", _store("TagResource")),
    _SM + "UntagResource": Route("secretsmanager:UntagResource", "secret_id", _store("UntagResource")),
    _SM + "GetRandomPassword": Route("secretsmanager:GetRandomPassword", None, Local(_random_password)),
    _SM + "RotateSecret": Route("secretsmanager:RotateSecret", "secret_id", _store("RotateSecret")),
    _SM + "CancelRotateSecret": Route(
        "secretsmanager:CancelRotateSecret", "secret_id", _store("CancelRotateSecret")
    ),
    _SM + "ListRotationAttempts": Route(
        "secretsmanager:ListRotationAttempts", "secret_id", _store("ListRotationAttempts")
    ),
    _SM + "RegisterRotationFunction": Route(
        "secretsmanager:RegisterRotationFunction", "name", _store("RegisterRotationFunction")
    ),
    _SM + "ListRotationFunctions": Route(
        "secretsmanager:ListRotationFunctions", None, _store("ListRotationFunctions")
    ),
    _SM + "DeleteRotationFunction": Route(
        "secretsmanager:DeleteRotationFunction", "function_id", _store("DeleteRotationFunction")
    ),
    _SM + "ReplicateSecretToRegions": Route(
        "secretsmanager:ReplicateSecretToRegions", "secret_id", _store("ReplicateSecretToRegions")
    ),
    _SM + "RemoveRegionsFromReplication": Route(
        "secretsmanager:RemoveRegionsFromReplication", "secret_id", _store("RemoveRegionsFromReplication")
    ),
    _SM + "StopReplicationToReplica": Route(
        "secretsmanager:StopReplicationToReplica", "secret_id", _store("StopReplicationToReplica")
    ),
    _SM + "PutResourcePolicy": Route(
        "secretsmanager:PutResourcePolicy", "secret_id", _store("PutResourcePolicy")
    ),
    _SM + "GetResourcePolicy": Route(
        "secretsmanager:GetResourcePolicy", "secret_id", _store("GetResourcePolicy")
    ),
    _SM + "DeleteResourcePolicy": Route(
        "secretsmanager:DeleteResourcePolicy", "secret_id", _store("DeleteResourcePolicy")
    ),
    _SM + "ValidateResourcePolicy": Route(
        "secretsmanager:ValidateResourcePolicy", "secret_id", _store("ValidateResourcePolicy")
    ),
    # Beyond AWS (issue 14): the call needs secretsmanager:WatchSecrets on "*" (the store decides it); each
    # event needs secretsmanager:DescribeSecret on its secret (decided per event by the store).
    _SM + "WatchSecrets": Route("secretsmanager:WatchSecrets", None, _store("WatchSecrets")),
    # KeyManagementService
    _KMS + "CreateKey": Route("kms:CreateKey", None, _kms("CreateKey")),
    _KMS + "DescribeKey": Route("kms:DescribeKey", "key_id", _kms("DescribeKey")),
    _KMS + "ListKeys": Route("kms:ListKeys", None, _kms("ListKeys")),
    _KMS + "EnableKey": Route("kms:EnableKey", "key_id", _kms("EnableKey")),
    _KMS + "DisableKey": Route("kms:DisableKey", "key_id", _kms("DisableKey")),
    _KMS + "ScheduleKeyDeletion": Route("kms:ScheduleKeyDeletion", "key_id", _kms("ScheduleKeyDeletion")),
    _KMS + "CancelKeyDeletion": Route("kms:CancelKeyDeletion", "key_id", _kms("CancelKeyDeletion")),
    _KMS + "CreateAlias": Route("kms:CreateAlias", "alias_name", _kms("CreateAlias")),
    _KMS + "ListAliases": Route("kms:ListAliases", "key_id", _kms("ListAliases")),
    _KMS + "DeleteAlias": Route("kms:DeleteAlias", "alias_name", _kms("DeleteAlias")),
    _KMS + "EnableKeyRotation": Route("kms:EnableKeyRotation", "key_id", _kms("EnableKeyRotation")),
    _KMS + "DisableKeyRotation": Route("kms:DisableKeyRotation", "key_id", _kms("DisableKeyRotation")),
    _KMS + "GetKeyRotationStatus": Route("kms:GetKeyRotationStatus", "key_id", _kms("GetKeyRotationStatus")),
    _KMS + "RotateKeyOnDemand": Route("kms:RotateKeyOnDemand", "key_id", _kms("RotateKeyOnDemand")),
    _KMS + "GenerateDataKey": Route("kms:GenerateDataKey", "key_id", _kms("GenerateDataKey")),
    _KMS + "Encrypt": Route("kms:Encrypt", "key_id", _kms("Encrypt")),
    _KMS + "Decrypt": Route("kms:Decrypt", "key_id", _kms("Decrypt")),
    _KMS + "GetKeyPolicy": Route("kms:GetKeyPolicy", "key_id", _kms("GetKeyPolicy")),
    _KMS + "PutKeyPolicy": Route("kms:PutKeyPolicy", "key_id", _kms("PutKeyPolicy")),
    # SealService (operators only: see coffer.gateway.authz.OPERATOR_ACTIONS)
    _SEAL + "OperatorInit": Route("kms:OperatorInit", None, _seal("OperatorInit")),
    _SEAL + "OperatorUnseal": Route("kms:OperatorUnseal", None, _seal("OperatorUnseal")),
    _SEAL + "OperatorSeal": Route("kms:OperatorSeal", None, _seal("OperatorSeal")),
    _SEAL + "OperatorStatus": Route("kms:OperatorStatus", None, _seal("OperatorStatus")),
    _SEAL + "OperatorRotateRoot": Route("kms:OperatorRotateRoot", None, _seal("OperatorRotateRoot")),
    _SEAL + "OperatorMigrateSeal": Route("kms:OperatorMigrateSeal", None, _seal("OperatorMigrateSeal")),
    # IdentityManagementService, SecurityTokenService, OrganizationsService (served and decided by the store)
    **_iam_routes(),
    _STS + "GetCallerIdentity": Route(
        "sts:GetCallerIdentity", None, Forward(Downstream.STS, "GetCallerIdentity")
    ),
    _STS + "AssumeRole": Route("sts:AssumeRole", "role_arn", Forward(Downstream.STS, "AssumeRole")),
    _ORG + "CreateAccount": Route(
        "organizations:CreateAccount", "account_name", Forward(Downstream.ORGANIZATIONS, "CreateAccount")
    ),
    _ORG + "ListAccounts": Route(
        "organizations:ListAccounts", None, Forward(Downstream.ORGANIZATIONS, "ListAccounts")
    ),
    # UsageService (served by the store, which decides coffer:GetUsage)
    "/coffer.api.usage.v1.UsageService/GetUsage": Route(
        "coffer:GetUsage", None, Forward(Downstream.USAGE, "GetUsage")
    ),
    # AuditService (the store decides cloudtrail:*)
    _AUDIT + "LookupEvents": Route("cloudtrail:LookupEvents", None, _audit("LookupEvents")),
    _AUDIT + "GetDigestPublicKey": Route("cloudtrail:GetDigestPublicKey", None, _audit("GetDigestPublicKey")),
    _AUDIT + "ExportTrail": Route("cloudtrail:ExportTrail", None, _audit("ExportTrail")),
}


def public_event_sources(
    services: Iterable[ServiceDescriptor] = PUBLIC_SERVICES, routes: Mapping[str, Route] = ROUTES
) -> dict[str, str]:
    """Public service full name → the audit eventSource of its calls (from its routes' action prefix)."""
    out: dict[str, str] = {}
    for service in services:
        for method in service.methods:
            prefix = routes[full_method(method)].action.partition(":")[0]
            out[service.full_name] = ACTION_SOURCES[prefix]
    return out


def full_method(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def resource_getter(field_name: str | None, message: Descriptor) -> Callable[[Any], str]:
    """The function reading the resource from a request, resolved once from the descriptor."""
    if field_name is None:
        return lambda _request: ANY_RESOURCE
    field = message.fields_by_name[field_name]
    if field.is_repeated:
        get_list = operator.attrgetter(field_name)
        return lambda request: ",".join(get_list(request)) or ANY_RESOURCE
    get = operator.attrgetter(field_name)
    return lambda request: get(request) or ANY_RESOURCE


def _forwarder(call: Callable[..., Awaitable[Any]]) -> Callable[[Any, float | None], Run]:
    def prepare(request: Any, remaining: float | None) -> Run:
        async def run() -> Any:
            timeout = (
                FORWARD_TIMEOUT_SECONDS if remaining is None else min(remaining, FORWARD_TIMEOUT_SECONDS)
            )
            return await call(request, timeout=max(timeout, 0.001))

        return run

    return prepare


def _answerer(app: GatewayApp, local: Local) -> Callable[[Any, float | None], Run]:
    answer = local.prepare

    def prepare(request: Any, _remaining: float | None) -> Run:
        return answer(app, request)

    return prepare


Invoke: TypeAlias = Callable[[Any, "float | None"], Awaitable[Any]]
"""``(request message, seconds the caller still waits or None) -> response message``."""

StreamInvoke: TypeAlias = Callable[[Any, "float | None"], AsyncGenerator[Any, None]]
"""``(request message, seconds the caller still waits or None) -> the response messages``."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One public method as every front end serves it: the gRPC servicers here and the AWS-protocol
    endpoint (``coffer.gateway.aws``) both call ``invoke``, which runs ``GatewayApp.call`` (throttle →
    authorize → run → audit) with the route's action and resource. The caller must already be
    authenticated and bound to the call's context (``coffer.rpc.context``)."""

    method: MethodDescriptor
    route: Route
    request_class: type[Message]
    response_class: type[Message]
    invoke: Invoke
    #: A server-streaming method's messages (``invoke`` then refuses: a front end that answers with one
    #: message cannot serve it); None for a unary method.
    stream: StreamInvoke | None = None

    @property
    def full_name(self) -> str:
        return full_method(self.method)


def _operation(
    app: GatewayApp, method: MethodDescriptor, route: Route, stubs: Mapping[Downstream, Any]
) -> Operation:
    if method.client_streaming:
        raise TypeError(f"{full_method(method)}: the gateway serves unary and server-streaming methods only")
    if method.server_streaming:
        return _stream_operation(app, method, route, stubs)
    action = route.action
    resource_of = resource_getter(route.resource, method.input_type)
    target = route.target
    prepare = (
        _forwarder(getattr(stubs[target.downstream], target.method))
        if isinstance(target, Forward)
        else _answerer(app, target)
    )

    event_source = ACTION_SOURCES.get(action.partition(":")[0], "")
    answered_here = isinstance(target, Local)
    name = method.name

    async def invoke(request: Any, remaining: float | None) -> Any:
        return await app.call(
            principal=current_principal(),
            request_id=current_request_id(),
            action=action,
            resource=resource_of(request),
            run=prepare(request, remaining),
            trail=TrailCall(event_source, name, request, answered_here),
        )

    return Operation(
        method=method,
        route=route,
        request_class=GetMessageClass(method.input_type),
        response_class=GetMessageClass(method.output_type),
        invoke=invoke,
    )


def _stream_operation(
    app: GatewayApp, method: MethodDescriptor, route: Route, stubs: Mapping[Downstream, Any]
) -> Operation:
    """A server-streaming method: forwarded to its downstream stream, throttled, authorized and audited by
    ``GatewayApp.stream``; the forwarded call is cancelled when the caller goes away (or the stream ends)."""
    target = route.target
    if not isinstance(target, Forward):
        raise TypeError(f"{full_method(method)}: a streaming method is forwarded, never answered here")
    open_call = getattr(stubs[target.downstream], target.method)
    action = route.action
    resource_of = resource_getter(route.resource, method.input_type)
    event_source = ACTION_SOURCES.get(action.partition(":")[0], "")
    name = method.name

    async def forward(request: Any, remaining: float | None) -> AsyncGenerator[Any, None]:
        # No FORWARD_TIMEOUT_SECONDS: a stream lives as long as its caller wants (or its own deadline).
        call = open_call(request, timeout=remaining)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def stream(request: Any, remaining: float | None) -> AsyncGenerator[Any, None]:
        return app.stream(
            principal=current_principal(),
            request_id=current_request_id(),
            action=action,
            resource=resource_of(request),
            open_stream=lambda: forward(request, remaining),
            trail=TrailCall(event_source, name, request, False),
        )

    async def invoke(_request: Any, _remaining: float | None) -> Any:
        raise errors.InvalidRequest(f"{name} is a stream: call it through the gRPC API.")

    return Operation(
        method=method,
        route=route,
        request_class=GetMessageClass(method.input_type),
        response_class=GetMessageClass(method.output_type),
        invoke=invoke,
        stream=stream,
    )


def _method_handler(operation: Operation) -> grpc.RpcMethodHandler:
    stream = operation.stream
    if stream is not None:

        async def stream_behavior(request: Any, context: Context) -> AsyncIterator[Any]:
            # Closed explicitly (not left to the garbage collector) when the caller goes away, so that the
            # forwarded call is cancelled at once.
            async with contextlib.aclosing(stream(request, context.time_remaining())) as messages:
                async for message in messages:
                    yield message

        return grpc.unary_stream_rpc_method_handler(
            stream_behavior,
            request_deserializer=operation.request_class.FromString,
            response_serializer=operation.response_class.SerializeToString,
        )
    invoke = operation.invoke

    async def behavior(request: Any, context: Context) -> Any:
        return await invoke(request, context.time_remaining())

    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=operation.request_class.FromString,
        response_serializer=operation.response_class.SerializeToString,
    )


def gateway_operations(
    app: GatewayApp,
    *,
    store: store_pb2_grpc.SecretStoreServiceStub,
    kms: kms_pb2_grpc.KeyManagementServiceStub,
    seal: kms_pb2_grpc.SealServiceStub | None = None,
    services: Iterable[ServiceDescriptor] = PUBLIC_SERVICES,
    routes: Mapping[str, Route] = ROUTES,
    others: Mapping[Downstream, Any] | None = None,
) -> dict[str, Operation]:
    """Full method name → :class:`Operation`, for every method of ``services``. Raises LookupError when a
    method has no route: a public RPC is never exposed without an action. Without a ``seal`` stub the seal
    calls answer UNAVAILABLE (unit tests that exercise the other services); so do the calls of any other
    downstream (``others``: IAM, STS, Organizations, …) not given."""
    stubs: dict[Downstream, Any] = {d: _NotConnected(d) for d in Downstream}
    stubs.update(others or {})
    stubs.update(
        {
            Downstream.STORE: store,
            Downstream.KMS: kms,
            Downstream.SEAL: seal if seal is not None else _NoSeal(),
        }
    )
    out: dict[str, Operation] = {}
    for service in services:
        for method in service.methods:
            route = routes.get(full_method(method))
            if route is None:
                raise LookupError(f"{full_method(method)} has no gateway route (IAM action and resource)")
            out[full_method(method)] = _operation(app, method, route, stubs)
    return out


def grpc_handlers(operations: Mapping[str, Operation]) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """Service full name → method name → gRPC handler of each operation."""
    out: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for operation in operations.values():
        service = operation.method.containing_service.full_name
        out.setdefault(service, {})[operation.method.name] = _method_handler(operation)
    return out


def gateway_handlers(
    app: GatewayApp,
    *,
    store: store_pb2_grpc.SecretStoreServiceStub,
    kms: kms_pb2_grpc.KeyManagementServiceStub,
    seal: kms_pb2_grpc.SealServiceStub | None = None,
    usage: usage_pb2_grpc.UsageServiceStub | None = None,
    services: Iterable[ServiceDescriptor] = PUBLIC_SERVICES,
    routes: Mapping[str, Route] = ROUTES,
    others: Mapping[Downstream, Any] | None = None,
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """Service full name → method name → handler, for every method of ``services`` (see
    :func:`gateway_operations`)."""
    return grpc_handlers(
        gateway_operations(
            app, store=store, kms=kms, seal=seal, services=services, routes=routes, others=others
        )
    )


class _NoSeal:
    """Stands for a missing seal (or usage) stub: every call fails as a dependency that cannot be reached."""

    def __init__(self, what: str = "kms seal") -> None:
        self._what = what

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        what = self._what

        async def call(_request: Any, **_kw: Any) -> Any:
            raise errors.Unavailable(f"The {what} service is not connected ({method}).")

        return call


class _NotConnected:
    """Stands for a downstream stub the gateway was not given."""

    def __init__(self, downstream: Downstream) -> None:
        self._name = downstream.value

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def call(_request: Any, **_kw: Any) -> Any:
            raise errors.Unavailable(f"{self._name} is not connected ({method}).")

        return call


def add_gateway_services(
    server: grpc.aio.Server,
    app: GatewayApp | None = None,
    *,
    store: store_pb2_grpc.SecretStoreServiceStub | None = None,
    kms: kms_pb2_grpc.KeyManagementServiceStub | None = None,
    seal: kms_pb2_grpc.SealServiceStub | None = None,
    others: Mapping[Downstream, Any] | None = None,
    operations: Mapping[str, Operation] | None = None,
) -> tuple[str, ...]:
    """Register the public services on ``server`` (from ``operations``, or built from ``app`` and the
    stubs); returns their full names (for the health service)."""
    if operations is None:
        if app is None or store is None or kms is None:
            raise TypeError("add_gateway_services needs operations, or an app with its store and kms stubs")
        operations = gateway_operations(app, store=store, kms=kms, seal=seal, others=others)
    services = grpc_handlers(operations)
    for name, handlers in services.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)
    return tuple(services)
