"""``coffer audit``: the audit trail.

- ``coffer audit lookup-events [--lookup-attributes AttributeKey=EventName,AttributeValue=GetSecretValue]
  [--start-time T] [--end-time T] [--max-results N] [--next-token X]``: CloudTrail's LookupEvents (JSON in
  the AWS shape, newest first).
- ``coffer audit verify [--public-key FILE]``: fetch the whole chain and every signed digest (sealing the
  newest events first) and check them with the digest public key (``--public-key``: the one exported
  earlier and kept apart; default: the one the service serves now). Prints ``OK ...`` or names the first
  event modified, deleted, inserted or reordered, and exits 1 then.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from coffer.api.audit.v1 import audit_pb2
from coffer.cli import shapes
from coffer.client import CofferClient

if TYPE_CHECKING:  # the chain's checks (cryptography) are imported by `audit verify` only
    from coffer.crypto.audit_chain import ChainedEvent, SignedDigest

EXIT_OK = 0
EXIT_INVALID = 1

Connect = Callable[[argparse.Namespace], CofferClient]


def _time(text: str) -> dt.datetime:
    """ISO 8601 (``2026-12-01T10:00:00Z``) or epoch seconds; naive times are UTC."""
    try:
        when = dt.datetime.fromtimestamp(float(text), tz=dt.UTC)
    except ValueError:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _attribute(text: str) -> audit_pb2.LookupAttribute:
    fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    if set(fields) != {"AttributeKey", "AttributeValue"}:
        raise ValueError("--lookup-attributes takes AttributeKey=<key>,AttributeValue=<value>")
    return audit_pb2.LookupAttribute(
        attribute_key=fields["AttributeKey"], attribute_value=fields["AttributeValue"]
    )


def _lookup(connect: Connect) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    def handle(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        request = audit_pb2.LookupEventsRequest(
            lookup_attributes=[_attribute(a) for a in args.lookup_attributes or ()],
            next_token=args.next_token or "",
        )
        if args.start_time:
            request.start_time.FromDatetime(_time(args.start_time))
        if args.end_time:
            request.end_time.FromDatetime(_time(args.end_time))
        if args.max_results is not None:
            request.max_results = args.max_results
        with connect(args) as client:
            response = client.audit.call("LookupEvents", request)
        assert isinstance(response, audit_pb2.LookupEventsResponse)
        body: dict[str, Any] = {
            "Events": [
                {
                    "EventId": e.event_id,
                    "EventName": e.event_name,
                    "ReadOnly": e.read_only,
                    "AccessKeyId": e.access_key_id,
                    "EventTime": shapes.aws_timestamp(e.event_time),
                    "EventSource": e.event_source,
                    "Username": e.username,
                    "Resources": [
                        {"ResourceType": r.resource_type or None, "ResourceName": r.resource_name}
                        for r in e.resources
                    ],
                    "CloudTrailEvent": e.cloud_trail_event,
                }
                for e in response.events
            ]
        }
        if response.next_token:
            body["NextToken"] = response.next_token
        print(json.dumps(body, indent=4, ensure_ascii=False), file=out)
        return EXIT_OK

    return handle


def fetch_trail(client: CofferClient) -> tuple[list[ChainedEvent], list[SignedDigest]]:
    """Every chained row (seq order) and every digest (oldest first), sealing the newest events first."""
    from coffer.crypto.audit_chain import ChainedEvent, SignedDigest

    rows: list[ChainedEvent] = []
    digests: list[SignedDigest] = []
    after = 0
    while True:
        page = client.audit.call(
            "ExportTrail", audit_pb2.ExportTrailRequest(after_seq=after, seal_now=after == 0)
        )
        assert isinstance(page, audit_pb2.ExportTrailResponse)
        if after == 0:
            digests = [SignedDigest(body=json.loads(d.body), signature=d.signature) for d in page.digests]
        rows.extend(
            ChainedEvent(r.seq, r.event_id, r.record.encode("utf-8"), r.prev_hash, r.hash) for r in page.rows
        )
        if not page.more or not page.rows:
            return rows, digests
        after = page.rows[-1].seq


def _verify(connect: Connect) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    def handle(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        with connect(args) as client:
            if args.public_key:
                pem = Path(args.public_key).read_bytes()
            else:
                key = client.audit.call("GetDigestPublicKey", audit_pb2.GetDigestPublicKeyRequest())
                assert isinstance(key, audit_pb2.GetDigestPublicKeyResponse)
                pem = key.public_key_pem.encode("ascii")
            rows, digests = fetch_trail(client)
        from coffer.crypto.audit_chain import verify

        report = verify(rows, digests, pem)
        if report.ok:
            print(
                f"OK: {report.events_checked} events and {report.digests_checked} digests verified"
                f" ({report.unsealed_events} not sealed yet)",
                file=out,
            )
            return EXIT_OK
        where = f"seq {report.sequence}" if report.sequence is not None else "-"
        if report.event_id:
            where += f" event {report.event_id}"
        kind = report.kind.value if report.kind is not None else "invalid"
        print(f"INVALID: {kind}: {where}: {report.message}", file=out)
        return EXIT_INVALID

    return handle


def add_audit_commands(
    commands: Any, leaf_parents: Sequence[argparse.ArgumentParser], connect: Connect
) -> None:
    audit = commands.add_parser("audit", help="the audit trail: lookup-events, verify")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=type(audit))
    actions.required = True
    lookup = actions.add_parser(
        "lookup-events", parents=list(leaf_parents), help="the account's events, newest first (LookupEvents)"
    )
    lookup.add_argument(
        "--lookup-attributes",
        action="append",
        help="AttributeKey=<EventName|Username|ResourceName|ResourceType|AccessKeyId|ReadOnly|EventId|"
        "EventSource>,AttributeValue=<value> (one)",
    )
    lookup.add_argument("--start-time", help="ISO 8601 or epoch seconds (inclusive)")
    lookup.add_argument("--end-time", help="ISO 8601 or epoch seconds (inclusive)")
    lookup.add_argument("--max-results", type=int, default=None, help="1-50 (default 50)")
    lookup.add_argument("--next-token", help="the NextToken of the previous page")
    lookup.set_defaults(handler=_lookup(connect))
    check = actions.add_parser(
        "verify",
        parents=list(leaf_parents),
        help="check the hash chain and the signed digests; name the first event tampered with",
    )
    check.add_argument("--public-key", help="the digest public key (PEM) exported earlier")
    check.set_defaults(handler=_verify(connect))
