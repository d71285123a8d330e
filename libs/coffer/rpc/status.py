"""The ONLY place where Coffer errors and gRPC status codes meet.

Server side: ``to_status`` turns any exception into (code, message, trailing metadata carrying a
google.rpc.Status with an ErrorInfo whose ``reason`` is the AWS error name). Client side: ``from_rpc_error``
rebuilds the CofferError from that trailer.

Failures that are the world's fault (a lost or refused connection to PostgreSQL, Redis or another service, a
failover, a timeout, a serialization failure or deadlock) are retryable: ``classify`` makes them
``Unavailable`` (UNAVAILABLE) or ``Aborted`` (ABORTED), never INTERNAL. Driver exceptions are recognised by
their module and class names (and PostgreSQL's SQLSTATE), so this module imports no database driver.
"""

from __future__ import annotations

import errno
import socket

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from coffer.core import errors as e

ERROR_DOMAIN = "coffer"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: UTF-8 bytes at most of a status message. It travels twice in the trailers (percent-encoded in grpc-message,
#: base64 in grpc-status-details-bin), which must stay under gRPC's 8 KiB metadata limit.
MAX_MESSAGE_BYTES = 1024
_CUT_MARK = "...(truncated)"

# Most specific first: the first class in an error's MRO found here decides its status.
_STATUS_BY_KIND: dict[type[e.CofferError], grpc.StatusCode] = {
    e.InvalidCiphertext: grpc.StatusCode.INVALID_ARGUMENT,
    # Sealed: the kms is up but cannot use its root key until operators unseal it (retrying later may work).
    e.KmsSealed: grpc.StatusCode.UNAVAILABLE,
    # The HSM of the pkcs11 seal is unreachable (token removed or failing): retry when it is back.
    e.KmsHsmUnavailable: grpc.StatusCode.UNAVAILABLE,
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
    e.Aborted: grpc.StatusCode.ABORTED,
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
    grpc.StatusCode.ABORTED: e.Aborted,
}

# PostgreSQL SQLSTATEs (asyncpg errors carry ``sqlstate``). Class 08 (connection exception) is unavailable
# as a whole; so are an administrator's or a crash's shutdown, a server still starting, too many connections
# and a statement cancelled by its timeout. Serialization failures, deadlocks and lock timeouts are conflicts.
_PG_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "57014", "53300"})
_PG_CONFLICT_STATES = frozenset({"40001", "40P01", "55P03"})
# redis-py errors that mean "not reachable / not ready / failing over": retry later.
_REDIS_UNAVAILABLE = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
        "ReadOnlyError",
        "MasterDownError",
        "TryAgainError",
    }
)
# asyncpg raises a bare InterfaceError with one of these in its message once its connection or pool went away
# (e.g. "cannot call Transaction.__aexit__(): the underlying connection is closed").
_ASYNCPG_CLOSED = ("connection is closed", "pool is closing", "pool is closed")
_ASYNCPG_BROKEN_STATE = "cannot switch to state"
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
    }
)
_GRPC_UNAVAILABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _raised_within(exc: BaseException, package: str) -> bool:
    """Whether ``exc`` was raised from inside ``package`` (a frame of its traceback runs its code)."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(name, str) and (name == package or name.startswith(package + ".")):
            return True
        tb = tb.tb_next
    return False


def _dependency_of(exc: BaseException) -> tuple[str, str] | None:
    """(dependency, "unavailable" | "conflict") when ``exc`` is a retryable failure of the world."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code = exc.code()
        if code in _GRPC_UNAVAILABLE:
            return "another Coffer service", "unavailable"
        if code is grpc.StatusCode.ABORTED:
            return "another Coffer service", "conflict"
        return None
    for cls in type(exc).__mro__:
        package = cls.__module__.partition(".")[0]
        if package == "asyncpg":
            state = getattr(exc, "sqlstate", None)
            if isinstance(state, str):
                if state.startswith("08") or state in _PG_UNAVAILABLE_STATES:
                    return "PostgreSQL", "unavailable"
                if state in _PG_CONFLICT_STATES:
                    return "PostgreSQL", "conflict"
                return None
            if type(exc).__name__ == "InterfaceError" and any(m in str(exc) for m in _ASYNCPG_CLOSED):
                return "PostgreSQL", "unavailable"
            if type(exc).__name__ == "InternalClientError" and str(exc).startswith(_ASYNCPG_BROKEN_STATE):
                # A connection whose session the server terminated mid-operation (a restart) is left in a
                # state asyncpg refuses to use (MagicStack/asyncpg#1069); the pool replaces it.
                return "PostgreSQL", "unavailable"
            return None
        if package == "redis":
            return ("Redis", "unavailable") if cls.__name__ in _REDIS_UNAVAILABLE else None
    if isinstance(exc, OSError) and _raised_within(exc, "asyncpg"):
        # asyncpg connecting to a server that is down: its Unix socket is gone (ENOENT) or refuses
        return "PostgreSQL", "unavailable"
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return "the network", "unavailable"
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return "the network", "unavailable"
    return None


def _dependency_in_chain(exc: BaseException) -> tuple[str, str] | None:
    """``_dependency_of`` for ``exc`` or what it was raised from or while handling: a lost connection often
    surfaces as a second error in the clean-up (a transaction cannot roll back on a closed connection)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        found = _dependency_of(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def classify(exc: BaseException) -> e.CofferError:
    """The CofferError an exception stands for: itself if it is one; ``Unavailable`` or ``Aborted`` for a
    failure of a dependency (see the module docstring); ``Internal`` for anything else (a bug)."""
    if isinstance(exc, e.CofferError):
        return exc
    found = _dependency_in_chain(exc)
    if found is None:
        return e.Internal()
    dependency, kind = found
    if kind == "conflict":
        return e.Aborted(
            f"The request conflicted with a concurrent change in {dependency} and was not applied. Try again."
        )
    return e.Unavailable(f"A dependency ({dependency}) is unavailable or timed out. Try again later.")


def status_code_of(err: e.CofferError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        code = _STATUS_BY_KIND.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def bounded_message(message: str) -> str:
    """``message`` cut to ``MAX_MESSAGE_BYTES`` UTF-8 bytes (on a character boundary), marked when cut."""
    raw = message.encode("utf-8")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    keep = raw[: MAX_MESSAGE_BYTES - len(_CUT_MARK)].decode("utf-8", errors="ignore")
    return keep + _CUT_MARK


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """Map an exception to (gRPC code, message, trailing metadata) through ``classify``: a dependency's
    failure becomes UNAVAILABLE or ABORTED, any other unknown exception INTERNAL. The message is bounded
    (``bounded_message``)."""
    err = classify(exc)
    code = status_code_of(err)
    message = bounded_message(err.message)
    info = error_details_pb2.ErrorInfo(reason=err.code, domain=ERROR_DOMAIN)
    detail = any_pb2.Any()
    detail.Pack(info)
    rich = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return code, message, ((STATUS_DETAILS_KEY, rich.SerializeToString()),)


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


# --- HTTP (the AWS-protocol endpoint, ``coffer.gateway.aws``) -----------------------------------------------

#: The generic text of every internal error sent over HTTP (the real one is logged, never sent).
INTERNAL_HTTP_MESSAGE = (
    "An internal error occurred. Try again later; the request id identifies it in the logs."
)
#: What each AWS service calls its own internal failure and a dependency that timed out (aws-wire.md §3.2):
#: Secrets Manager and STS answer 500 ``InternalServiceError`` / ``InternalFailure`` and 503
#: ``ServiceUnavailable``; KMS answers 500 ``KMSInternalException`` / ``DependencyTimeoutException``.
_HTTP_INTERNAL_CODE = {"kms": "KMSInternalException", "sts": "InternalFailure"}
_GENERIC_UNAVAILABLE = frozenset({e.Unavailable.default_code, e.Aborted.default_code})


def to_http(exc: BaseException, *, service: str = "secretsmanager") -> tuple[int, str, str, bool]:
    """(HTTP status, AWS error code, message, internal) of an exception answered over AWS's protocols, through
    ``classify`` like :func:`to_status`: 400 for every error that is the caller's to fix (AWS's services
    answer 400 for their modelled errors, throttling, validation, access denied and authentication
    failures); 500 for a bug (``internal`` true: the message is generic, the caller of this function logs
    the exception with its traceback); 503 ``ServiceUnavailable`` (KMS: 500
    ``DependencyTimeoutException``) for a dependency that is down or a conflict that a retry may clear —
    both retried by every SDK. ``service``: ``secretsmanager``, ``kms`` or ``sts`` (its own codes)."""
    err = classify(exc)
    if isinstance(err, e.Internal):
        return 500, _HTTP_INTERNAL_CODE.get(service, e.Internal.default_code), INTERNAL_HTTP_MESSAGE, True
    message = bounded_message(err.message)
    if isinstance(err, (e.Unavailable, e.Aborted)):
        if service == "kms":
            code = "DependencyTimeoutException" if err.code in _GENERIC_UNAVAILABLE else err.code
            return 500, code, message, False
        return 503, err.code, message, False
    return 400, err.code, message, False
