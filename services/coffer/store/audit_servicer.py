"""gRPC adapters of the audit trail: the public ``AuditService`` (LookupEvents, GetDigestPublicKey,
ExportTrail), reached through the gateway, and the internal ``AuditIngestService`` (Append), by which the
kms and the gateway store the events of the public calls they serve themselves.

The store decides its ``cloudtrail:*`` actions: ``coffer.core.authorize.authorize`` with the caller of the
call (``coffer.rpc.context.current_caller``). A caller sees only its own account's events; ExportTrail (the
whole chain, every account) is for the root account only.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Final

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.audit.v1 import audit_pb2 as pb
from coffer.api.audit.v1 import audit_pb2_grpc
from coffer.core import errors
from coffer.core.audit_event import AuditEvent
from coffer.core.authorize import authorize
from coffer.core.principal import ROOT_ACCOUNT, Principal
from coffer.rpc.context import current_caller
from coffer.store.audit_trail import _ATTRIBUTES, MAX_RESULTS, LookupQuery, StoreAuditTrail

#: Append takes at most this many records per call.
APPEND_MAX_RECORDS: Final = 1000
_VALUE_MAX: Final = 2000


def _caller() -> Principal:
    caller = current_caller()
    if caller is None:
        raise errors.AccessDenied("An unauthenticated caller may not read the audit trail.")
    return caller


def lookup_query(request: pb.LookupEventsRequest, account_id: str) -> LookupQuery:
    """Validate a LookupEvents request (AWS's rules and error names)."""
    attrs = list(request.lookup_attributes)
    if len(attrs) > 1:
        raise errors.InvalidParameter(
            "LookupAttributes can contain only one item.", code="InvalidLookupAttributesException"
        )
    key: str | None = None
    value: str | None = None
    if attrs:
        key, value = attrs[0].attribute_key, attrs[0].attribute_value
        if key not in _ATTRIBUTES:
            raise errors.InvalidParameter(
                f"AttributeKey {key!r} is not one of {', '.join(sorted(_ATTRIBUTES))}.",
                code="InvalidLookupAttributesException",
            )
        if not 1 <= len(value) <= _VALUE_MAX:
            raise errors.InvalidParameter(
                f"AttributeValue must be 1 to {_VALUE_MAX} characters long.",
                code="InvalidLookupAttributesException",
            )
    start = _time(request.start_time, "StartTime") if request.HasField("start_time") else None
    end = _time(request.end_time, "EndTime") if request.HasField("end_time") else None
    if start is not None and end is not None and start > end:
        raise errors.InvalidParameter("StartTime is after EndTime.", code="InvalidTimeRangeException")
    max_results = request.max_results if request.HasField("max_results") else MAX_RESULTS
    if not 1 <= max_results <= MAX_RESULTS:
        raise errors.InvalidParameter(
            f"MaxResults must be between 1 and {MAX_RESULTS}.", code="InvalidMaxResultsException"
        )
    return LookupQuery(
        account_id=account_id,
        attribute_key=key,
        attribute_value=value,
        start_time=start,
        end_time=end,
        max_results=max_results,
    )


def _time(value: Timestamp, name: str) -> datetime:
    """A request's timestamp; one outside the range a Timestamp may hold (years 1..9999, nanos 0..999999999)
    is the caller's error."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise errors.InvalidParameter(
            f"{name} is not a valid time.", code="InvalidTimeRangeException"
        ) from exc


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, trail: StoreAuditTrail) -> None:
        self._trail = trail

    async def LookupEvents(
        self, request: pb.LookupEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupEventsResponse:
        caller = _caller()
        authorize(caller, "cloudtrail:LookupEvents")
        query = lookup_query(request, caller.account)
        events, token = await self._trail.lookup(query, request.next_token)
        out = pb.LookupEventsResponse(next_token=token)
        for e in events:
            item = out.events.add(
                event_id=e.event_id,
                event_name=e.event_name,
                read_only="true" if e.read_only else "false",
                access_key_id=e.access_key_id,
                event_source=e.event_source,
                username=e.user_name,
                cloud_trail_event=e.record,
            )
            item.event_time.FromDatetime(e.event_time)
            types = list(e.resource_types)
            for name in e.resource_names:
                item.resources.add(resource_type=types[0] if len(types) == 1 else "", resource_name=name)
        return out

    async def GetDigestPublicKey(
        self, request: pb.GetDigestPublicKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDigestPublicKeyResponse:
        authorize(_caller(), "cloudtrail:GetDigestPublicKey")
        return pb.GetDigestPublicKeyResponse(
            public_key_pem=self._trail.public_key_pem.decode("ascii"), fingerprint=self._trail.fingerprint
        )

    async def ExportTrail(
        self, request: pb.ExportTrailRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportTrailResponse:
        caller = _caller()
        if caller.account != ROOT_ACCOUNT:
            raise errors.AccessDenied(
                f"User: {caller.arn} is not authorized to perform: cloudtrail:ExportTrail "
                "(the whole trail is for the root account only)"
            )
        authorize(caller, "cloudtrail:ExportTrail")
        if request.after_seq < 0 or request.max_rows < 0:
            raise errors.InvalidParameter("AfterSeq and MaxRows must not be negative.")
        if request.seal_now and request.after_seq == 0:
            await self._trail.seal()
        rows, digests, more = await self._trail.export(request.after_seq, request.max_rows)
        return pb.ExportTrailResponse(
            rows=[
                pb.ChainedRow(
                    seq=r.seq,
                    event_id=r.event_id,
                    record=r.record.decode("utf-8"),
                    prev_hash=r.prev_hash,
                    hash=r.hash,
                )
                for r in rows
            ],
            digests=[
                pb.SignedDigest(body=d.canonical().decode("utf-8"), signature=d.signature) for d in digests
            ],
            more=more,
        )


class AuditIngestServicer(audit_pb2_grpc.AuditIngestServiceServicer):
    """Append: the events of public calls the kms and the gateway serve, stored before the ack."""

    def __init__(self, trail: StoreAuditTrail) -> None:
        self._trail = trail

    async def Append(self, request: pb.AppendRequest, context: grpc.aio.ServicerContext) -> pb.AppendResponse:
        if len(request.records) > APPEND_MAX_RECORDS:
            raise errors.InvalidParameter(f"Append takes at most {APPEND_MAX_RECORDS} records.")
        events: list[AuditEvent] = []
        for index, text in enumerate(request.records):
            try:
                events.append(AuditEvent.from_record(json.loads(text)))  # redacted again on the way in
            except (ValueError, KeyError, TypeError) as exc:
                raise errors.InvalidParameter(f"Record {index} is not a valid audit record: {exc}") from None
        await asyncio.gather(*(self._trail.record(e) for e in events))
        return pb.AppendResponse(stored=len(events))
