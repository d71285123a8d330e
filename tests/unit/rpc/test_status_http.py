"""The one CofferError → HTTP mapping of the AWS-protocol endpoint (``coffer.rpc.status.to_http``): 400 for
what the caller must fix, 500 with a generic message for bugs, 503 (KMS: 500 DependencyTimeoutException) for
a dependency that is down — each service's own codes (aws-wire.md §3.2)."""

from __future__ import annotations

import asyncpg
import pytest

from coffer.core import errors
from coffer.rpc.status import INTERNAL_HTTP_MESSAGE, MAX_MESSAGE_BYTES, to_http


@pytest.mark.parametrize(
    "error",
    [
        errors.NotFound(),
        errors.InvalidParameter("bad"),
        errors.Validation("1 validation error detected"),
        errors.AccessDenied(),
        errors.Unauthenticated(code="InvalidSignatureException"),
        errors.Throttling(),
        errors.LimitExceeded("too many versions"),
        errors.KmsDisabled("disabled"),
        errors.InvalidCiphertext(),
    ],
)
def test_client_errors_are_400_with_their_own_code_and_message(error: errors.CofferError) -> None:
    assert to_http(error) == (400, error.code, error.message, False)


def test_a_bug_is_500_with_a_generic_message_in_each_services_words() -> None:
    bug = KeyError("secret internals")
    assert to_http(bug) == (500, "InternalServiceError", INTERNAL_HTTP_MESSAGE, True)
    assert to_http(bug, service="kms")[:2] == (500, "KMSInternalException")
    assert to_http(bug, service="sts")[:2] == (500, "InternalFailure")
    on_purpose = errors.Internal("the store's table x is missing")
    assert to_http(on_purpose)[2] == INTERNAL_HTTP_MESSAGE


def test_a_dependency_that_is_down_is_retryable() -> None:
    lost = ConnectionResetError("peer reset")
    assert to_http(lost)[:2] == (503, "ServiceUnavailable")
    assert to_http(lost, service="kms")[:2] == (500, "DependencyTimeoutException")
    sealed = errors.KmsSealed()
    assert to_http(sealed, service="kms")[:2] == (500, "KMSSealedException")
    assert to_http(errors.Aborted())[:2] == (503, "TransactionConflict")
    conflict = asyncpg.exceptions.SerializationError("could not serialize")
    assert to_http(conflict)[0] == 503


def test_messages_are_bounded() -> None:
    status, _, message, _ = to_http(errors.InvalidParameter("x" * 10_000))
    assert status == 400 and len(message.encode()) <= MAX_MESSAGE_BYTES
