"""STS over AWS's query protocol: a form-encoded ``Action=…&Version=2011-06-15`` request → the public STS
message; the response and errors as STS's XML (``shared/docs/aws-wire.md`` §4).

SEAM (issue 10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.message import Message

from coffer.core import errors


def sts_request(form: Mapping[str, Sequence[str]]) -> tuple[str, Message]:
    """(full gRPC method name, request message) of an STS query request; raises CofferErrors with STS's
    codes (``InvalidAction``, ``ValidationError``, ``MissingParameter``…)."""
    raise NotImplementedError


def sts_response(method: str, response: Message, request_id: str) -> bytes:
    """The XML body of a successful STS answer (``<OpResponse><OpResult>…</OpResult><ResponseMetadata>…``)."""
    raise NotImplementedError


def sts_error(error: errors.CofferError, request_id: str) -> tuple[int, bytes]:
    """(HTTP status, ``<ErrorResponse>`` XML) of an STS error, with STS's codes and statuses."""
    raise NotImplementedError
