"""The one error hierarchy of Coffer.

Each class is a *kind* of failure (what the caller must do about it); each instance carries the exact
AWS error name (``code``) and a message a person can act on. ``coffer.rpc.status`` alone maps kinds to
gRPC status codes, and puts ``code`` in ``google.rpc.ErrorInfo.reason``. Pure: no I/O imports.
"""

from __future__ import annotations

from typing import ClassVar


class CofferError(Exception):
    """Base of every error Coffer raises on purpose."""

    default_code: ClassVar[str] = "InternalServiceError"
    default_message: ClassVar[str] = "An internal error occurred."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.code: str = code or self.default_code
        self.message: str = self.default_message if message is None else message
        #: The AWS operation a client was calling when the service answered this error (set by the SDK).
        self.operation: str | None = None
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class NotFound(CofferError):
    default_code = "ResourceNotFoundException"
    default_message = "Secrets Manager can't find the specified secret."


class AlreadyExists(CofferError):
    default_code = "ResourceExistsException"


class InvalidParameter(CofferError):
    default_code = "InvalidParameterException"


class Validation(CofferError):
    """Shape/constraint violations (AWS answers ValidationException)."""

    default_code = "ValidationException"


class InvalidRequest(CofferError):
    """The request is well-formed but not valid for the resource's current state."""

    default_code = "InvalidRequestException"


class InvalidNextToken(CofferError):
    default_code = "InvalidNextTokenException"
    default_message = "The NextToken value is not valid."


class LimitExceeded(CofferError):
    default_code = "LimitExceededException"


class DecryptionFailure(CofferError):
    default_code = "DecryptionFailure"
    default_message = "Secrets Manager can't decrypt the protected secret text using the provided KMS key."


class EncryptionFailure(CofferError):
    default_code = "EncryptionFailure"
    default_message = (
        "Secrets Manager can't encrypt the protected secret text using the provided KMS key. "
        "Check that the KMS key is available, enabled, and not in an invalid state."
    )


class AccessDenied(CofferError):
    default_code = "AccessDeniedException"
    default_message = "You are not authorized to perform this operation."


class Unauthenticated(CofferError):
    default_code = "UnrecognizedClientException"
    default_message = "The security token included in the request is invalid."


class Throttling(CofferError):
    default_code = "ThrottlingException"
    default_message = "Rate exceeded."


class Unavailable(CofferError):
    """A dependency (another service, the database) cannot be reached right now; retrying may work."""

    default_code = "ServiceUnavailable"
    default_message = "The service is unavailable. Try again later."


class Aborted(CofferError):
    """The request lost a race with a concurrent one (a serialization failure or deadlock in the database);
    nothing was changed, and retrying the same request may succeed."""

    default_code = "TransactionConflict"
    default_message = "The request conflicted with a concurrent change and was not applied. Try again."


class Internal(CofferError):
    default_code = "InternalServiceError"


# --- KMS (AWS KMS error names) -------------------------------------------------------------------------


class KmsNotFound(NotFound):
    default_code = "NotFoundException"
    default_message = "The requested key does not exist."


class KmsAlreadyExists(AlreadyExists):
    default_code = "AlreadyExistsException"


class KmsDisabled(InvalidRequest):
    default_code = "DisabledException"


class KmsInvalidState(InvalidRequest):
    default_code = "KMSInvalidStateException"


class KmsSealed(Unavailable):
    """The kms's root key is sealed (not in memory): every cryptographic call is refused until operators give
    enough unseal key shares (``coffer operator unseal``). Describe, list and health keep working."""

    default_code = "KMSSealedException"
    default_message = "The KMS is sealed: unseal it with `coffer operator unseal`."


class KmsHsmUnavailable(Unavailable):
    """The kms's HSM (``COFFER_SEAL=pkcs11``) cannot be reached: the token is removed or failing.
    Retryable: the kms logs in again and finds its keys when the token is back."""

    default_code = "KMSHsmUnavailableException"
    default_message = "The KMS cannot reach its HSM."


class InvalidShare(InvalidParameter):
    """An unseal key share that is not valid (bad checksum, unknown word, wrong length, another split's)."""

    default_code = "InvalidUnsealShareException"


class InvalidCiphertext(CofferError):
    """Every parse, length, tag or context failure is this one opaque error (no message), as in AWS KMS."""

    default_code = "InvalidCiphertextException"
    default_message = ""


class IncorrectKey(InvalidParameter):
    default_code = "IncorrectKeyException"
    default_message = "The key ID in the request does not identify a CMK that can perform this operation."


class UnsupportedOperation(InvalidParameter):
    default_code = "UnsupportedOperationException"
    default_message = ""


class InvalidMarker(InvalidParameter):
    default_code = "InvalidMarkerException"
    default_message = "The marker that specifies where pagination should next begin is not valid."


class TagError(InvalidParameter):
    default_code = "TagException"


class InvalidAliasName(InvalidParameter):
    default_code = "InvalidAliasNameException"


# --- IAM, STS, Organizations (AWS IAM's error codes, as the AWS CLI prints them) -------------------------


class NoSuchEntity(NotFound):
    default_code = "NoSuchEntity"
    default_message = "The request was rejected because it referenced an entity that does not exist."


class EntityAlreadyExists(AlreadyExists):
    default_code = "EntityAlreadyExists"


class DeleteConflict(InvalidRequest):
    """Deleting an entity that still has subordinate entities (a user with access keys or policies)."""

    default_code = "DeleteConflict"


class IamLimitExceeded(LimitExceeded):
    default_code = "LimitExceeded"


class IamValidation(Validation):
    """IAM's input validation failure (names, lengths, enumerations)."""

    default_code = "ValidationError"


class DuplicateAccount(AlreadyExists):
    default_code = "DuplicateAccountException"


_KINDS: tuple[type[CofferError], ...] = (
    NotFound,
    AlreadyExists,
    InvalidParameter,
    Validation,
    InvalidRequest,
    InvalidNextToken,
    LimitExceeded,
    DecryptionFailure,
    EncryptionFailure,
    AccessDenied,
    Unauthenticated,
    Throttling,
    Unavailable,
    Aborted,
    Internal,
    KmsNotFound,
    KmsAlreadyExists,
    KmsDisabled,
    KmsInvalidState,
    KmsSealed,
    KmsHsmUnavailable,
    InvalidShare,
    InvalidCiphertext,
    IncorrectKey,
    UnsupportedOperation,
    InvalidMarker,
    TagError,
    InvalidAliasName,
    NoSuchEntity,
    EntityAlreadyExists,
    DeleteConflict,
    IamLimitExceeded,
    IamValidation,
    DuplicateAccount,
)

#: AWS error name -> the class that carries it by default (used to rebuild errors on the client side).
ERRORS_BY_CODE: dict[str, type[CofferError]] = {cls.default_code: cls for cls in _KINDS}
# Resource-policy failures (their classes live with the policy engine, coffer.core.policy.model): rebuilt
# on the client side as InvalidParameter kinds carrying the AWS name.
ERRORS_BY_CODE.setdefault("MalformedPolicyDocumentException", InvalidParameter)
ERRORS_BY_CODE.setdefault("PublicPolicyException", InvalidParameter)
