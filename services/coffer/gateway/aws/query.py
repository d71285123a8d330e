"""STS over AWS's query protocol: a form-encoded ``Action=…&Version=2011-06-15`` request → the public STS
message; the response and errors as STS's XML (``shared/docs/aws-wire.md`` §4).

SEAM (issue 10). Pure: no I/O.

Only the protocol is decided here: which action, which members, their shapes (a list's ``.member.N``
indices, an integer that is one). The members' values (the role ARN, the session name's pattern, the
duration's bounds, the tags' rules) are checked once, by the store's STS (``coffer.core.iam``), for this
endpoint and the gRPC API alike.

AssumeRole members STS has but Coffer's ``AssumeRoleRequest`` does not (session policies, transitive tag
keys, external id, MFA, source identity, provided contexts, a minimum token size) are refused with a
``ValidationError`` naming them rather than dropped: dropping a session policy would hand the session more
permissions than the caller asked for, and dropping an MFA or external id would answer a question nobody
asked. A parameter that STS does not have either is refused the same way.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.iam.v1 import iam_pb2 as pb
from coffer.core import errors
from coffer.core import iam as rules

VERSION: Final = "2011-06-15"
NAMESPACE: Final = "https://sts.amazonaws.com/doc/2011-06-15/"

_SERVICE = pb.DESCRIPTOR.services_by_name["SecurityTokenService"]
#: STS action → the full gRPC method name of the public operation that serves it.
ACTIONS: Mapping[str, str] = {m.name: f"/{_SERVICE.full_name}/{m.name}" for m in _SERVICE.methods}
_ACTION_OF_METHOD = {method: action for action, method in ACTIONS.items()}

#: AssumeRole members of STS's model (botocore's ``sts`` 2011-06-15) that ``AssumeRoleRequest`` has no field
#: for, by the form key's first part.
UNSUPPORTED_ASSUME_ROLE_MEMBERS: Final = frozenset(
    {
        "Policy",
        "PolicyArns",
        "TransitiveTagKeys",
        "ExternalId",
        "SerialNumber",
        "TokenCode",
        "SourceIdentity",
        "ProvidedContexts",
        "MinimumSessionTokenSize",
    }
)
#: List members the query protocol sends as ``Name=`` when the list is empty.
_LIST_MEMBERS: Final = frozenset({"Tags", "PolicyArns", "TransitiveTagKeys", "ProvidedContexts"})

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INTEGER_RE = re.compile(r"[-+]?[0-9]+", flags=re.ASCII)
_TAG_KEY_RE = re.compile(r"Tags\.member\.([1-9][0-9]{0,8})\.(Key|Value)", flags=re.ASCII)
#: Characters XML 1.0 cannot carry at all (escaped or not): shown as ``\xNN`` so the document stays parseable.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

INTERNAL_FAILURE_MESSAGE: Final = (
    "The request processing has failed because of an unknown error, exception or failure."
)


# --- requests ----------------------------------------------------------------------------------------------


def _validation(message: str) -> errors.IamValidation:
    return errors.IamValidation(message)


def _single(form: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = form.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise _validation(f"The parameter {name} was given {len(values)} times; give it once.")
    return values[0]


def _required(form: Mapping[str, Sequence[str]], name: str) -> str:
    value = _single(form, name)
    if value is None:
        raise errors.InvalidParameter(
            f"The request must contain the parameter {name}.", code="MissingParameter"
        )
    return value


def _check_members(action: str, form: Mapping[str, Sequence[str]], known: Callable[[str], bool]) -> None:
    for key in sorted(form):
        if key in ("Action", "Version") or known(key):
            continue
        head = key.split(".", 1)[0]
        if action == "AssumeRole" and head in UNSUPPORTED_ASSUME_ROLE_MEMBERS:
            if head in _LIST_MEMBERS and key == head and all(v == "" for v in form[key]):
                continue  # an empty list: nothing asked for
            raise _validation(
                f"The AssumeRole parameter {head} is not supported by Coffer (the session would not be what "
                "was asked for): leave it out."
            )
        raise _validation(f"{key} is not a parameter of {action}.")


def _get_caller_identity(form: Mapping[str, Sequence[str]]) -> Message:
    _check_members("GetCallerIdentity", form, lambda key: False)
    return pb.GetCallerIdentityRequest()


def _duration(text: str) -> int:
    if not _INTEGER_RE.fullmatch(text):
        raise _validation(
            f"Value '{text}' for parameter DurationSeconds is invalid: it must be a whole number of seconds."
        )
    value = int(text)
    # The store checks the bounds; a number a protobuf int32 cannot hold gets the same answer here.
    if value > _INT32_MAX:
        raise _validation(
            f"1 validation error detected: Value '{text}' at 'durationSeconds' failed to satisfy constraint: "
            f"Member must have value less than or equal to {rules.SESSION_MAX_SECONDS}"
        )
    if value < _INT32_MIN:
        raise _validation(
            f"1 validation error detected: Value '{text}' at 'durationSeconds' failed to satisfy constraint: "
            f"Member must have value greater than or equal to {rules.SESSION_MIN_SECONDS}"
        )
    return value


def _tags(form: Mapping[str, Sequence[str]]) -> list[pb.Tag]:
    """``Tags.member.N.Key`` / ``.Value`` pairs, in index order."""
    entries: dict[int, dict[str, str]] = {}
    for key in form:
        match = _TAG_KEY_RE.fullmatch(key)
        if match is not None:
            value = _single(form, key)
            assert value is not None
            entries.setdefault(int(match[1]), {})[match[2]] = value
    tags = []
    for index in sorted(entries):
        entry = entries[index]
        for part in ("Key", "Value"):
            if part not in entry:
                raise _validation(
                    f"1 validation error detected: Value null at 'tags.{index}.member.{part.lower()}' failed "
                    "to satisfy constraint: Member must not be null"
                )
        tags.append(pb.Tag(key=entry["Key"], value=entry["Value"]))
    return tags


def _assume_role(form: Mapping[str, Sequence[str]]) -> Message:
    def known(key: str) -> bool:
        if key in ("RoleArn", "RoleSessionName", "DurationSeconds"):
            return True
        if key == "Tags":
            return all(v == "" for v in form[key])
        return _TAG_KEY_RE.fullmatch(key) is not None

    _check_members("AssumeRole", form, known)
    request = pb.AssumeRoleRequest(
        role_arn=_required(form, "RoleArn"),
        role_session_name=_required(form, "RoleSessionName"),
        tags=_tags(form),
    )
    duration = _single(form, "DurationSeconds")
    if duration is not None:
        request.duration_seconds = _duration(duration)
    return request


_PARSERS: Mapping[str, Callable[[Mapping[str, Sequence[str]]], Message]] = {
    "GetCallerIdentity": _get_caller_identity,
    "AssumeRole": _assume_role,
}
assert set(_PARSERS) == set(ACTIONS), "every STS rpc has a query form (and no form lacks an rpc)"


def sts_request(form: Mapping[str, Sequence[str]]) -> tuple[str, Message]:
    """(full gRPC method name, request message) of an STS query request; raises CofferErrors with STS's
    codes (``InvalidAction``, ``ValidationError``, ``MissingParameter``…)."""
    action = _single(form, "Action")
    if not action:
        raise errors.InvalidParameter(
            "The request is missing an action or a required parameter.", code="MissingAction"
        )
    version = _required(form, "Version")
    parser = _PARSERS.get(action)
    if version != VERSION or parser is None:
        served = " and ".join(sorted(ACTIONS))
        raise errors.InvalidParameter(
            f"Could not find operation {action} for version {version}. Coffer's STS serves {served} "
            f"(version {VERSION}).",
            code="InvalidAction",
        )
    return ACTIONS[action], parser(form)


# --- responses ---------------------------------------------------------------------------------------------


def _xml_text(value: str) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m[0]):02x}", value)


def _add(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = _xml_text(text)
    return element


def _iso8601(timestamp: Timestamp) -> str:
    """A protobuf Timestamp as STS writes it: UTC, whole seconds, ``Z``."""
    return timestamp.ToDatetime(tzinfo=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="unicode").encode("utf-8")


def _assume_role_result(result: ET.Element, response: pb.AssumeRoleResponse) -> None:
    creds = response.credentials
    node = ET.SubElement(result, "Credentials")
    _add(node, "AccessKeyId", creds.access_key_id)
    _add(node, "SecretAccessKey", creds.secret_access_key)
    _add(node, "SessionToken", creds.session_token)
    _add(node, "Expiration", _iso8601(creds.expiration))
    user = ET.SubElement(result, "AssumedRoleUser")
    _add(user, "AssumedRoleId", response.assumed_role_user.assumed_role_id)
    _add(user, "Arn", response.assumed_role_user.arn)


def _get_caller_identity_result(result: ET.Element, response: pb.GetCallerIdentityResponse) -> None:
    _add(result, "UserId", response.user_id)
    _add(result, "Account", response.account)
    _add(result, "Arn", response.arn)


def sts_response(method: str, response: Message, request_id: str) -> bytes:
    """The XML body of a successful STS answer (``<OpResponse><OpResult>…</OpResult><ResponseMetadata>…``)."""
    action = _ACTION_OF_METHOD.get(method)
    if action is None:
        raise errors.Internal(f"{method} is not an STS operation.")
    root = ET.Element(f"{action}Response", xmlns=NAMESPACE)
    result = ET.SubElement(root, f"{action}Result")  # botocore needs this wrapper, even empty
    if isinstance(response, pb.AssumeRoleResponse):
        _assume_role_result(result, response)
    elif isinstance(response, pb.GetCallerIdentityResponse):
        _get_caller_identity_result(result, response)
    else:
        raise errors.Internal(f"{type(response).__name__} is not the response of {action}.")
    _add(ET.SubElement(root, "ResponseMetadata"), "RequestId", request_id)
    return _serialize(root)


# --- errors ------------------------------------------------------------------------------------------------

#: Coffer's (or AWS's JSON services') error code → (STS's code, HTTP status).
STS_ERRORS: Mapping[str, tuple[str, int]] = {
    "AccessDeniedException": ("AccessDenied", 403),
    "AccessDenied": ("AccessDenied", 403),
    "UnrecognizedClientException": ("InvalidClientTokenId", 403),
    "InvalidClientTokenId": ("InvalidClientTokenId", 403),
    "InvalidSignatureException": ("SignatureDoesNotMatch", 403),
    "SignatureDoesNotMatch": ("SignatureDoesNotMatch", 403),
    "ExpiredTokenException": ("ExpiredToken", 403),
    "ExpiredToken": ("ExpiredToken", 403),
    "IncompleteSignatureException": ("IncompleteSignature", 400),
    "IncompleteSignature": ("IncompleteSignature", 400),
    "MissingAuthenticationTokenException": ("MissingAuthenticationToken", 403),
    "MissingAuthenticationToken": ("MissingAuthenticationToken", 403),
    "ValidationException": ("ValidationError", 400),
    "ValidationError": ("ValidationError", 400),
    "ThrottlingException": ("Throttling", 400),
    "Throttling": ("Throttling", 400),
    "MalformedPolicyDocumentException": ("MalformedPolicyDocument", 400),
    "MalformedPolicyDocument": ("MalformedPolicyDocument", 400),
    "PackedPolicyTooLarge": ("PackedPolicyTooLarge", 400),
    "RegionDisabledException": ("RegionDisabledException", 403),
    "InvalidAction": ("InvalidAction", 400),
    "MissingAction": ("MissingAction", 400),
    "MissingParameter": ("MissingParameter", 400),
}

#: Client-error kinds whose own code an STS client may see as it is (400, ``Sender``).
_CLIENT_KINDS: tuple[type[errors.CofferError], ...] = (
    errors.InvalidParameter,
    errors.Validation,
    errors.InvalidRequest,
    errors.NotFound,
    errors.AlreadyExists,
    errors.LimitExceeded,
    errors.InvalidNextToken,
)


def sts_code(error: errors.CofferError) -> tuple[int, str, str]:
    """(HTTP status, STS's code, message) of an error: by its code when STS has a name for it, else by its
    kind; anything internal is ``InternalFailure`` with a generic text (never the error's own)."""
    known = STS_ERRORS.get(error.code)
    if known is not None:
        code, status = known
        return status, code, error.message
    if isinstance(error, errors.Unavailable | errors.Aborted):
        # Retrying may work: 503 is retried by every SDK.
        return 503, "ServiceUnavailable", error.message
    if isinstance(error, errors.Throttling):
        return 400, "Throttling", error.message
    if isinstance(error, errors.AccessDenied):
        return 403, "AccessDenied", error.message
    if isinstance(error, errors.Unauthenticated):
        return 403, "InvalidClientTokenId", error.message
    if isinstance(error, _CLIENT_KINDS):
        return 400, error.code, error.message
    return 500, "InternalFailure", INTERNAL_FAILURE_MESSAGE


def sts_error(error: errors.CofferError, request_id: str) -> tuple[int, bytes]:
    """(HTTP status, ``<ErrorResponse>`` XML) of an STS error, with STS's codes and statuses."""
    status, code, message = sts_code(error)
    root = ET.Element("ErrorResponse", xmlns=NAMESPACE)
    node = ET.SubElement(root, "Error")
    _add(node, "Type", "Receiver" if status >= 500 else "Sender")
    _add(node, "Code", code)
    _add(node, "Message", message)
    _add(root, "RequestId", request_id)
    return status, _serialize(root)
