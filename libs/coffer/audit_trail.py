"""The audit trail of public calls: one CloudTrail-shaped event per public call, built in ONE place (the
server interceptor, ``coffer.rpc.server``; the gateway for the calls it refuses or answers itself) and
handed to a trail that stores it durably before the response leaves (fail closed).

- :func:`build_event` turns a call (method, request, response or error, caller, ids) into an
  :class:`~coffer.core.audit_event.AuditEvent`: the request's fields as ``requestParameters`` (secret
  values, keys and passwords left out by ``coffer.core.audit_event``'s redaction), the response's top-level
  identifiers (ARN, Name, VersionId, ...) as ``responseElements`` for calls that change something (never
  for reads: their responses carry values), the AWS error name for denied and failed calls.
- :class:`PublicAudit` says which methods are public calls to record (by service, with their
  ``eventSource``) and from which peers (the gateway), and holds the :class:`AuditTrail`.
- :class:`Batcher` is the group commit used by both trails: the store's writer (one transaction for all the
  queued events) and the kms/gateway Append client (one RPC for all the queued events).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Generic, Protocol, TypeVar

from google.protobuf import json_format
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from coffer.core import errors
from coffer.core.audit_event import AuditEvent, AuditResource, UserIdentity, new_event
from coffer.core.principal import Principal, PrincipalKind
from coffer.rpc import context as ctx

T = TypeVar("T")

#: Where a call came from when the gateway did not say (an internal caller, or no address known).
INTERNAL_SOURCE: Final = "coffer.internal"

SECRETS_SOURCE: Final = "secretsmanager.amazonaws.com"
KMS_SOURCE: Final = "kms.amazonaws.com"
CLOUDTRAIL_SOURCE: Final = "cloudtrail.amazonaws.com"

#: IAM action prefix → eventSource (the gateway names its calls by action).
ACTION_SOURCES: Final[Mapping[str, str]] = {
    "secretsmanager": SECRETS_SOURCE,
    "kms": KMS_SOURCE,
    "cloudtrail": CLOUDTRAIL_SOURCE,
    "iam": "iam.amazonaws.com",
    "sts": "sts.amazonaws.com",
    "organizations": "organizations.amazonaws.com",
    "coffer": "usage.coffer",  # metering (GetUsage): beyond AWS
}

#: eventSource → the CloudTrail resource type of the resources its calls name.
RESOURCE_TYPES: Final[Mapping[str, str]] = {
    SECRETS_SOURCE: "AWS::SecretsManager::Secret",
    KMS_SOURCE: "AWS::KMS::Key",
    "iam.amazonaws.com": "AWS::IAM::Principal",
}

_READ_PREFIXES: Final = ("Get", "Describe", "List", "BatchGet", "Lookup", "Export")
#: Calls that read although their names do not say so (CloudTrail marks them readOnly).
_READ_NAMES: Final = frozenset({"Decrypt", "Encrypt", "GenerateDataKey", "OperatorStatus"})

#: Request fields that name the resource a call is about (JSON names).
_RESOURCE_FIELDS: Final = ("secretId", "name", "keyId", "aliasName", "functionId", "userName", "roleName")
#: Response fields copied into responseElements (top-level identifiers only, never values).
_RESPONSE_FIELDS: Final = frozenset(
    {"arn", "name", "versionId", "keyId", "aliasName", "deletionDate", "functionId", "accountId"}
)


class AuditTrail(Protocol):
    async def record(self, event: AuditEvent) -> None:
        """Store ``event`` durably; raise ``errors.Unavailable`` when it could not be stored."""


def is_read_only(event_name: str) -> bool:
    return event_name.startswith(_READ_PREFIXES) or event_name in _READ_NAMES


#: A request's string values are kept up to this many characters (a hostile request cannot bloat the trail;
#: CloudTrail bounds requestParameters too), a resource name up to RESOURCE_NAME_LIMIT (it is indexed).
VALUE_LIMIT: Final = 2048
RESOURCE_NAME_LIMIT: Final = 1024
TRUNCATED: Final = "...(truncated)"
#: What a request field without a JSON form (a Timestamp out of range) is recorded as.
INVALID_VALUE: Final = "(invalid value)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATED


def _jsonable(value: Any) -> Any:
    """MessageToDict output with floats written as strings (records hold no floats) and long strings cut."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _cut(value, VALUE_LIMIT)
    return value


def message_fields(message: Message | None) -> dict[str, Any]:
    """A message's set fields as JSON (camelCase names, as CloudTrail's requestParameters)."""
    if message is None:
        return {}
    try:
        fields = MessageToDict(message, preserving_proto_field_name=False)
    except json_format.Error:
        fields = _fields_one_by_one(message)
    out = _jsonable(fields)
    return out if isinstance(out, dict) else {}


def _fields_one_by_one(message: Message) -> dict[str, Any]:
    """A message that has no JSON form as a whole (a Timestamp out of range, ...): each set field on its own,
    the ones without a JSON form recorded as INVALID_VALUE (the request is refused by its handler)."""
    out: dict[str, Any] = {}
    for fd, _ in message.ListFields():
        single = type(message)()
        single.MergeFrom(message)
        for other, _ in message.ListFields():
            if other is not fd:
                single.ClearField(other.name)
        try:
            out.update(MessageToDict(single, preserving_proto_field_name=False))
        except json_format.Error:
            out[fd.json_name] = INVALID_VALUE
    return out


def response_identifiers(message: Message | None) -> dict[str, Any]:
    """The response's top-level identifier fields (ARN, Name, VersionId, KeyId, ...), read straight from the
    message: its other fields (values, plaintexts) are never converted, let alone kept."""
    out: dict[str, Any] = {}
    if message is None:
        return out
    for fd in message.DESCRIPTOR.fields:
        name = fd.json_name
        if name not in _RESPONSE_FIELDS or fd.is_repeated or fd.message_type is not None:
            continue
        if fd.has_presence and not message.HasField(fd.name):
            continue
        value = getattr(message, fd.name)
        if isinstance(value, bool | int | str) and value != "":
            out[name] = _cut(value, VALUE_LIMIT) if isinstance(value, str) else value
    return out


def user_identity(caller: Principal | None) -> UserIdentity:
    """CloudTrail's userIdentity of a caller (``Unknown`` when the call was refused before it was known)."""
    if caller is None:
        return UserIdentity(type="Unknown", arn="", account_id="")
    kind = {
        PrincipalKind.ACCOUNT: "Root",
        PrincipalKind.USER: "IAMUser",
        PrincipalKind.ASSUMED_ROLE: "AssumedRole",
        PrincipalKind.SERVICE: "AWSService",
    }.get(caller.kind, "Unknown")
    return UserIdentity(
        type=kind,
        arn=caller.arn,
        account_id=caller.account,
        access_key_id=caller.access_key_id or "",
        principal_id=caller.unique_id,
        user_name=caller.user_name or "",
    )


def cloudtrail_error_code(code: str) -> str:
    """CloudTrail writes a refused call's AccessDeniedException as ``AccessDenied``."""
    return "AccessDenied" if code == "AccessDeniedException" else code


def build_event(
    *,
    event_source: str,
    event_name: str,
    region: str,
    caller: Principal | None,
    request: Message | None,
    response: Message | None,
    error: errors.CofferError | None,
    request_id: str | None,
    source_ip: str | None = None,
    user_agent: str | None = None,
    when: datetime | None = None,
) -> AuditEvent:
    read_only = is_read_only(event_name)
    params = message_fields(request)
    answer = response_identifiers(response) if error is None else {}
    response_elements = None if read_only or error is not None else answer
    identity = user_identity(caller)
    resource_type = RESOURCE_TYPES.get(event_source, "")
    names: list[str] = []
    arn = answer.get("arn")
    if isinstance(arn, str) and arn:
        names.append(arn)
    else:
        for key in _RESOURCE_FIELDS:
            value = params.get(key)
            if isinstance(value, str) and value:
                names.append(value)
                break
    return new_event(
        event_time=when or datetime.now(UTC),
        event_source=event_source,
        event_name=event_name,
        aws_region=region,
        source_ip_address=source_ip or INTERNAL_SOURCE,
        user_agent=user_agent,
        user_identity=identity,
        request_parameters=params or None,
        response_elements=response_elements,
        error_code=None if error is None else cloudtrail_error_code(error.code),
        error_message=None if error is None else error.message,
        request_id=request_id or "",
        read_only=read_only,
        resources=[
            AuditResource(
                arn=_cut(name, RESOURCE_NAME_LIMIT), account_id=identity.account_id, type=resource_type
            )
            for name in names
        ],
    )


def call_event(
    *,
    event_source: str,
    event_name: str,
    region: str,
    caller: Principal | None,
    request: Message | None,
    response: Message | None,
    error: errors.CofferError | None,
) -> AuditEvent:
    """:func:`build_event` for the call being served: its request id, source IP and user agent come from
    the call's context (``coffer.rpc.context``)."""
    return build_event(
        event_source=event_source,
        event_name=event_name,
        region=region,
        caller=caller,
        request=request,
        response=response,
        error=error,
        request_id=ctx.current_request_id(),
        source_ip=ctx.source_ip_var.get(),
        user_agent=ctx.user_agent_var.get(),
    )


@dataclass(frozen=True, slots=True)
class PublicAudit:
    """Which calls a server records as public calls, and where they go. ``sources``: full service name
    (``coffer.api.store.v1.SecretStoreService``) → eventSource; only calls from ``peers`` (the gateway,
    which forwards the public calls) are public calls."""

    trail: AuditTrail
    sources: Mapping[str, str]
    region: str
    peers: frozenset[str] = field(default=frozenset({"gateway"}))
    #: The gateway: record only the calls refused before they were admitted (authentication failures),
    #: whichever peer; the calls it admits are recorded by the service that serves them.
    unadmitted_only: bool = False
    #: Fail the call when its event cannot be stored. Off for refusals, which disclose nothing: the caller
    #: gets its real error, the lost event is logged.
    fail_closed: bool = True

    def source_of(self, method: str, peer: str | None, *, admitted: bool = True) -> str | None:
        if self.unadmitted_only:
            if admitted:
                return None
        elif peer not in self.peers:
            return None
        service = method.strip("/").partition("/")[0]
        return self.sources.get(service)


class PartialFailure(Exception):
    """Raised by a Batcher's flush when only some items failed: ``failures[i]`` is item i's error or None."""

    def __init__(self, failures: list[Exception | None]) -> None:
        super().__init__(f"{sum(f is not None for f in failures)} of {len(failures)} items failed")
        self.failures = failures


class Batcher(Generic[T]):
    """Group commit: ``await submit(item)`` queues the item; one background task takes everything queued
    (at most ``max_batch``), hands it to ``flush`` once, then resolves every waiter, or fails every waiter
    with the error ``flush`` raised. While a flush runs, new items queue for the next one."""

    def __init__(
        self, flush: Callable[[list[T]], Awaitable[None]], *, name: str, max_batch: int = 500
    ) -> None:
        self._flush = flush
        self._name = name
        self._max = max_batch
        self._queue: deque[tuple[T, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> None:
        if self._closed:
            raise errors.Unavailable("The audit trail is shutting down.")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake.set()
        if self._task is None or self._task.done():
            # In a context of its own: not the first caller's (its request id, its principal).
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=self._name, context=contextvars.Context()
            )
        await future

    async def _run(self) -> None:
        while not self._closed or self._queue:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._max, len(self._queue)))]
                try:
                    await self._flush([item for item, _ in batch])
                except PartialFailure as partial:
                    for (_, future), failure in zip(batch, partial.failures, strict=True):
                        if future.done():
                            continue
                        if failure is None:
                            future.set_result(None)
                        else:
                            future.set_exception(failure)
                except Exception as exc:  # every waiter fails with it (fail closed)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)

    async def aclose(self) -> None:
        """Stop once the queued items are flushed."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task


#: How long one Append may take (the caller's response waits for it).
APPEND_TIMEOUT_SECONDS: Final = 10.0


class AppendTrail:
    """The trail of the kms and the gateway: events go to the store's ``AuditIngestService/Append``, batched
    (one RPC for every event queued meanwhile); ``record`` returns once the store acknowledged them.
    ``connect(address)`` makes the channel to the store (opened on first use; ``retarget`` points it at
    another address, e.g. a store started after this service in a test stack)."""

    def __init__(self, connect: Callable[[str], Any], address: str, *, name: str) -> None:
        self._connect = connect
        self._address = address
        self._channel: Any = None
        self._stub: Any = None
        self._batcher: Batcher[AuditEvent] = Batcher(self._send, name=name)

    def retarget(self, address: str) -> None:
        if address != self._address:
            self._address = address
            self._stub = None  # the old channel is closed by aclose; a new one opens on the next send

    async def record(self, event: AuditEvent) -> None:
        await self._batcher.submit(event)

    async def _send(self, events: list[AuditEvent]) -> None:
        from coffer.api.audit.v1 import audit_pb2, audit_pb2_grpc

        if self._stub is None:
            old, self._channel = self._channel, self._connect(self._address)
            if old is not None:
                await old.close()
            self._stub = audit_pb2_grpc.AuditIngestServiceStub(self._channel)
        request = audit_pb2.AppendRequest(records=[e.canonical().decode("utf-8") for e in events])
        try:
            await self._stub.Append(request, timeout=APPEND_TIMEOUT_SECONDS)
        except Exception as exc:
            raise errors.Unavailable(
                f"The audit trail could not be written ({type(exc).__name__}); the call was not answered."
            ) from exc

    async def aclose(self) -> None:
        await self._batcher.aclose()
        if self._channel is not None:
            await self._channel.close()
