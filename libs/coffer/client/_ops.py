"""What the async and sync clients share: the operation table (read from the proto descriptors), request
building (with the boto3-style ``ClientRequestToken`` auto-fill) and channel credentials."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from coffer.api.audit.v1 import audit_pb2
from coffer.api.iam.v1 import iam_pb2
from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2
from coffer.api.usage.v1 import usage_pb2
from coffer.client.profile import Connection
from coffer.client.retry import DEFAULT_MAX_ATTEMPTS, STANDARD, DeadlineExceeded, RetryPolicy
from coffer.core import errors
from coffer.rpc.channel import spread_target
from coffer.rpc.status import error_info_of, from_rpc_error
from coffer.rpc.tls import GATEWAY_HOST, name_options

SECRETS = secrets_pb2.DESCRIPTOR.services_by_name["SecretsManagerService"]
KMS = kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"]
#: The kms's seal (operators only): OperatorInit, OperatorUnseal, OperatorSeal, OperatorStatus,
#: OperatorRotateRoot, OperatorMigrateSeal.
SEAL = kms_pb2.DESCRIPTOR.services_by_name["SealService"]
#: IAM, STS and Organizations (``coffer.api.iam.v1``), served by the store through the gateway.
IAM = iam_pb2.DESCRIPTOR.services_by_name["IdentityManagementService"]
STS = iam_pb2.DESCRIPTOR.services_by_name["SecurityTokenService"]
ORGANIZATIONS = iam_pb2.DESCRIPTOR.services_by_name["OrganizationsService"]
#: Metering (beyond AWS): GetUsage.
USAGE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"]
#: The audit trail (CloudTrail's LookupEvents; digests for ``coffer audit verify``).
AUDIT = audit_pb2.DESCRIPTOR.services_by_name["AuditService"]

#: Like boto3, fill ``client_request_token`` with ``str(uuid4())`` when the caller did not give one.
TOKEN_AUTOFILL = frozenset({"CreateSecret", "PutSecretValue", "UpdateSecret", "RotateSecret"})

DEFAULT_TIMEOUT_SECONDS = 30.0


class EndpointUnreachable(errors.Unavailable):
    """The gateway itself could not be reached (no answer from a Coffer server at all)."""


def map_rpc_error(exc: grpc.RpcError, endpoint: str, operation: str | None = None) -> errors.CofferError:
    """The CofferError a call of ``operation`` failed with. A failure that carries no Coffer error details
    never came from a Coffer service: UNAVAILABLE becomes ``EndpointUnreachable``, DEADLINE_EXCEEDED (the
    call's own deadline) ``DeadlineExceeded``, and gRPC's RESOURCE_EXHAUSTED for a message over its size
    limit ``Validation`` (not throttling: retrying cannot help)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    error: errors.CofferError
    if error_info_of(exc) is not None:
        error = from_rpc_error(exc)
    elif code == grpc.StatusCode.UNAVAILABLE:
        error = EndpointUnreachable(f"Could not connect to the endpoint {endpoint}: {details}")
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        error = DeadlineExceeded(f"A Coffer service is unavailable (DEADLINE_EXCEEDED): {details}")
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        error = errors.Validation(f"The request or its response is too large: {details}")
    else:
        error = from_rpc_error(exc)
    error.operation = operation
    return error


@dataclass(frozen=True, slots=True)
class Operation:
    service: str  # full gRPC service name
    name: str  # the AWS operation name, e.g. GetSecretValue
    path: str  # /coffer.api.secrets.v1.SecretsManagerService/GetSecretValue
    request_type: type[Message]
    response_type: type[Message]


@cache
def operation(service: ServiceDescriptor, name: str) -> Operation:
    method = service.methods_by_name.get(name)
    if method is None:
        raise ValueError(f"{service.full_name} has no operation {name!r}")
    return Operation(
        service=service.full_name,
        name=name,
        path=f"/{service.full_name}/{name}",
        request_type=message_factory.GetMessageClass(method.input_type),
        response_type=message_factory.GetMessageClass(method.output_type),
    )


def build_request(op: Operation, request: Message | None, fields: Mapping[str, Any]) -> Message:
    """The request message: ``request`` itself, or one built from keyword fields (snake_case proto field
    names; nested messages may be given as dicts). Adds the idempotency token where boto3 would."""
    if request is not None and fields:
        raise TypeError(f"{op.name}: pass either a request message or keyword fields, not both")
    if request is None:
        msg = op.request_type(**fields)
    elif isinstance(request, op.request_type):
        msg = request
    else:
        raise TypeError(
            f"{op.name} takes a {op.request_type.DESCRIPTOR.full_name}, not {type(request).__name__}"
        )
    if op.name in TOKEN_AUTOFILL and not msg.HasField("client_request_token"):
        filled = op.request_type()
        filled.CopyFrom(msg)
        filled.client_request_token = str(uuid.uuid4())  # type: ignore[attr-defined]
        msg = filled
    return msg


def target_of(endpoint: str) -> str:
    """A gRPC target from ``host:port`` or ``https://host:port``."""
    for scheme in ("https://", "grpcs://"):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme) :].rstrip("/")
    if "://" in endpoint:
        raise ValueError(f"Unsupported endpoint {endpoint!r}: use host:port (TLS is always on)")
    return endpoint


def channel_target(endpoint: str, server_name: str | None) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target and channel options for ``endpoint``: one gateway (``host:port``, ``https://...``)
    or several replicas (``ip:port,ip:port`` or ``dns:///name:port``), over which calls are spread
    round-robin, a dead replica left out (``coffer.rpc.channel.spread_target``)."""
    target, balancing = spread_target(target_of(endpoint))
    return target, [*channel_options(server_name), *balancing]


def credentials(ca_file: str | Path) -> grpc.ChannelCredentials:
    """TLS verified against ``ca_file`` (each call is signed with the client's access key, not here)."""
    return grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())


def channel_options(server_name: str | None) -> list[tuple[str, Any]]:
    """Verify the name of the service meant, whatever address is dialled: ``server_name``, by default the
    gateway's (``gateway.coffer.internal``). Another certificate of the deployment's CA (a service's, or the
    operator's handed to users) then fails the TLS handshake before any credential is sent."""
    return name_options(server_name or GATEWAY_HOST)


def retry_policy(retry: RetryPolicy | None, max_attempts: int | None, retry_mode: str | None) -> RetryPolicy:
    """A client's retry policy: ``retry`` itself, else the standard one with ``max_attempts`` (default 3)."""
    if retry is not None:
        return retry
    return RetryPolicy(
        max_attempts=DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts,
        mode=retry_mode or STANDARD,
    )


def connection_options(conn: Connection, options: Mapping[str, Any]) -> dict[str, Any]:
    """A client's keyword arguments from a resolved connection (region, retries), ``options`` winning."""
    return {
        "region": conn.region,
        "max_attempts": conn.max_attempts,
        "retry_mode": conn.retry_mode,
        **options,
    }


def watch_request(
    resume_token: str | None, secret_ids: Sequence[str], name_prefix: str | None
) -> secrets_pb2.WatchSecretsRequest:
    """The WatchSecrets request of the async and sync clients' ``watch_secrets``."""
    msg = secrets_pb2.WatchSecretsRequest(secret_ids=list(secret_ids))
    if resume_token:
        msg.resume_token = resume_token
    if name_prefix is not None:
        msg.name_prefix = name_prefix
    return msg
