"""The ONLY place where Coffer errors and gRPC status codes meet.

Server side: ``to_status`` turns any exception into (code, message, trailing metadata carrying a
google.rpc.Status with an ErrorInfo whose ``reason`` is the AWS error name). Client side: ``from_rpc_error``
rebuilds the CofferError from that trailer.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from coffer.core import errors as e

ERROR_DOMAIN = "coffer"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Most specific first: the first class in an error's MRO found here decides its status.
_STATUS_BY_KIND: dict[type[e.CofferError], grpc.StatusCode] = {
    e.InvalidCiphertext: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.InvalidParameter: grpc.StatusCode.INVALID_ARGUMENT,
    e.Validation: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidNextToken: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidRequest: grpc.StatusCode.FAILED_PRECONDITION,
    e.LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.DecryptionFailure: grpc.StatusCode.FAILED_PRECONDITION,
    e.EncryptionFailure: grpc.StatusCode.FAILED_PRECONDITION,
    e.AccessDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.Throttling: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
    e.Internal: grpc.StatusCode.INTERNAL,
}

_KIND_BY_STATUS: dict[grpc.StatusCode, type[e.CofferError]] = {
    grpc.StatusCode.NOT_FOUND: e.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: e.AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: e.InvalidParameter,
    grpc.StatusCode.FAILED_PRECONDITION: e.InvalidRequest,
    grpc.StatusCode.RESOURCE_EXHAUSTED: e.Throttling,
    grpc.StatusCode.PERMISSION_DENIED: e.AccessDenied,
    grpc.StatusCode.UNAUTHENTICATED: e.Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: e.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: e.Unavailable,
}


def status_code_of(err: e.CofferError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        code = _STATUS_BY_KIND.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """Map an exception to (gRPC code, message, trailing metadata). Unknown exceptions become INTERNAL."""
    err = exc if isinstance(exc, e.CofferError) else e.Internal()
    code = status_code_of(err)
    info = error_details_pb2.ErrorInfo(reason=err.code, domain=ERROR_DOMAIN)
    detail = any_pb2.Any()
    detail.Pack(info)
    rich = status_pb2.Status(code=code.value[0], message=err.message, details=[detail])
    return code, err.message, ((STATUS_DETAILS_KEY, rich.SerializeToString()),)


def error_info_of(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            rich = status_pb2.Status.FromString(value)
            for detail in rich.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    return None


def from_rpc_error(exc: grpc.RpcError) -> e.CofferError:
    """Rebuild the CofferError a server raised (the AWS name travels in ErrorInfo.reason)."""
    code: grpc.StatusCode = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message: str = (exc.details() if hasattr(exc, "details") else None) or ""
    info = error_info_of(exc)
    if info is not None and info.domain == ERROR_DOMAIN:
        cls = e.ERRORS_BY_CODE.get(info.reason) or _KIND_BY_STATUS.get(code, e.Internal)
        return cls(message, code=info.reason)
    cls = _KIND_BY_STATUS.get(code, e.Internal)
    if cls is e.Unavailable:
        return e.Unavailable(f"A Coffer service is unavailable ({code.name}): {message}")
    return cls(message or None)
