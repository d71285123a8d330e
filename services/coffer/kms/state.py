"""THE key-state gate: one pure function from (operation, key state, key manager) to "allowed"
or the exact error and message AWS KMS answers. Every use case calls it after resolving the key identifier and
before acting; a unit test walks the whole matrix."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from coffer.core import errors
from coffer.kms.model import KeyManager, KeyState


class Operation(StrEnum):
    DESCRIBE_KEY = "DescribeKey"
    LIST_ALIASES = "ListAliases"
    DELETE_ALIAS = "DeleteAlias"
    CREATE_ALIAS = "CreateAlias"
    #: UpdateAlias is gated on its *new* target key; the current key may be in any state.
    UPDATE_ALIAS = "UpdateAlias"
    ENABLE_KEY = "EnableKey"
    DISABLE_KEY = "DisableKey"
    SCHEDULE_KEY_DELETION = "ScheduleKeyDeletion"
    CANCEL_KEY_DELETION = "CancelKeyDeletion"
    ENABLE_KEY_ROTATION = "EnableKeyRotation"
    DISABLE_KEY_ROTATION = "DisableKeyRotation"
    GET_KEY_ROTATION_STATUS = "GetKeyRotationStatus"
    ROTATE_KEY_ON_DEMAND = "RotateKeyOnDemand"
    LIST_KEY_ROTATIONS = "ListKeyRotations"
    ENCRYPT = "Encrypt"
    DECRYPT = "Decrypt"
    GENERATE_DATA_KEY = "GenerateDataKey"
    GENERATE_DATA_KEY_WITHOUT_PLAINTEXT = "GenerateDataKeyWithoutPlaintext"
    RE_ENCRYPT = "ReEncrypt"


#: Operations callers may not perform on AWS-managed keys (enable, disable, schedule or cancel deletion,
#: rotation settings, on-demand rotation, aliases): AccessDeniedException.
AWS_MANAGED_FORBIDDEN: frozenset[Operation] = frozenset(
    {
        Operation.ENABLE_KEY,
        Operation.DISABLE_KEY,
        Operation.SCHEDULE_KEY_DELETION,
        Operation.CANCEL_KEY_DELETION,
        Operation.ENABLE_KEY_ROTATION,
        Operation.DISABLE_KEY_ROTATION,
        Operation.ROTATE_KEY_ON_DEMAND,
        Operation.CREATE_ALIAS,
        Operation.UPDATE_ALIAS,
        Operation.DELETE_ALIAS,
    }
)

CRYPTO_OPERATIONS: frozenset[Operation] = frozenset(
    {
        Operation.ENCRYPT,
        Operation.DECRYPT,
        Operation.GENERATE_DATA_KEY,
        Operation.GENERATE_DATA_KEY_WITHOUT_PLAINTEXT,
        Operation.RE_ENCRYPT,
    }
)

_Rule = tuple[type[errors.CofferError], str]

# AWS's message for each refusal (``{arn}`` is the full key ARN; every message ends with a period).
_DISABLED: _Rule = (errors.KmsDisabled, "{arn} is disabled.")  # [1]
_PENDING_DELETION: _Rule = (errors.KmsInvalidState, "{arn} is pending deletion.")  # [3]
_NOT_PENDING_DELETION: _Rule = (errors.KmsInvalidState, "{arn} is not pending deletion.")  # [4]
_PENDING_IMPORT: _Rule = (errors.KmsInvalidState, "{arn} is pending import.")  # [5]
_EXTERNAL: _Rule = (
    errors.UnsupportedOperation,
    "{arn} origin is EXTERNAL which is not valid for this operation.",
)  # [6]
_UNAVAILABLE: _Rule = (errors.KmsInvalidState, "{arn} is unavailable.")
_UNAVAILABLE_UNSUPPORTED: _Rule = (errors.UnsupportedOperation, "{arn} is unavailable.")
_CREATING: _Rule = (errors.KmsInvalidState, "{arn} is creating.")
_UPDATING: _Rule = (errors.KmsInvalidState, "{arn} is updating.")
_PENDING_REPLICA_DELETION: _Rule = (errors.KmsInvalidState, "{arn} is pending replica deletion.")

S = KeyState

_ALIAS_TARGET: Mapping[KeyState, _Rule] = {
    S.PENDING_DELETION: _PENDING_DELETION,
    S.PENDING_REPLICA_DELETION: _PENDING_REPLICA_DELETION,
}
_ENABLE_DISABLE: Mapping[KeyState, _Rule] = {
    S.PENDING_DELETION: _PENDING_DELETION,
    S.PENDING_IMPORT: _PENDING_IMPORT,
    S.CREATING: _CREATING,
    S.UPDATING: _UPDATING,
    S.PENDING_REPLICA_DELETION: _PENDING_REPLICA_DELETION,
}
_SCHEDULE: Mapping[KeyState, _Rule] = {
    S.PENDING_DELETION: _PENDING_DELETION,
    S.UPDATING: _UPDATING,
    S.PENDING_REPLICA_DELETION: _PENDING_REPLICA_DELETION,
}
_CANCEL: Mapping[KeyState, _Rule] = {
    s: _NOT_PENDING_DELETION for s in KeyState if s is not S.PENDING_DELETION
}
_ROTATION_TOGGLE: Mapping[KeyState, _Rule] = {
    S.DISABLED: _DISABLED,
    S.PENDING_DELETION: _PENDING_DELETION,
    S.PENDING_IMPORT: _EXTERNAL,
    S.UNAVAILABLE: _UNAVAILABLE_UNSUPPORTED,
    S.CREATING: _CREATING,
    S.PENDING_REPLICA_DELETION: _PENDING_REPLICA_DELETION,
}
_ROTATION_READ: Mapping[KeyState, _Rule] = {
    S.PENDING_IMPORT: _EXTERNAL,
    S.UNAVAILABLE: _UNAVAILABLE_UNSUPPORTED,
}
_ROTATE_ON_DEMAND: Mapping[KeyState, _Rule] = {
    S.DISABLED: _DISABLED,
    S.PENDING_DELETION: _PENDING_DELETION,
    S.PENDING_IMPORT: _PENDING_IMPORT,
    S.UNAVAILABLE: _UNAVAILABLE_UNSUPPORTED,
    S.CREATING: _CREATING,
    S.PENDING_REPLICA_DELETION: _PENDING_REPLICA_DELETION,
}
_CRYPTO: Mapping[KeyState, _Rule] = {
    S.DISABLED: _DISABLED,
    S.PENDING_DELETION: _PENDING_DELETION,
    S.PENDING_IMPORT: _PENDING_IMPORT,
    S.UNAVAILABLE: _UNAVAILABLE,
    S.CREATING: _CREATING,
    S.PENDING_REPLICA_DELETION: _PENDING_REPLICA_DELETION,
}

_MATRIX: Mapping[Operation, Mapping[KeyState, _Rule]] = {
    Operation.DESCRIBE_KEY: {},
    Operation.LIST_ALIASES: {},
    Operation.DELETE_ALIAS: {},
    Operation.CREATE_ALIAS: _ALIAS_TARGET,
    Operation.UPDATE_ALIAS: _ALIAS_TARGET,
    Operation.ENABLE_KEY: _ENABLE_DISABLE,
    Operation.DISABLE_KEY: _ENABLE_DISABLE,
    Operation.SCHEDULE_KEY_DELETION: _SCHEDULE,
    Operation.CANCEL_KEY_DELETION: _CANCEL,
    Operation.ENABLE_KEY_ROTATION: _ROTATION_TOGGLE,
    Operation.DISABLE_KEY_ROTATION: _ROTATION_TOGGLE,
    Operation.GET_KEY_ROTATION_STATUS: _ROTATION_READ,
    Operation.ROTATE_KEY_ON_DEMAND: _ROTATE_ON_DEMAND,
    Operation.LIST_KEY_ROTATIONS: _ROTATION_READ,
    **{op: _CRYPTO for op in CRYPTO_OPERATIONS},
}


def aws_managed_denied(operation: Operation, arn: str) -> errors.AccessDenied:
    return errors.AccessDenied(
        f"{arn} is an AWS managed key. AWS managed keys are not configurable: "
        f"kms:{operation.value} is not allowed on them."
    )


def decide(
    operation: Operation, state: KeyState, manager: KeyManager, *, arn: str
) -> errors.CofferError | None:
    """``None`` when ``operation`` may run on a key in ``state`` managed by ``manager``, else the error.
    AWS-managed keys refuse configuration first (an authorization failure precedes any state check)."""
    if manager is KeyManager.AWS and operation in AWS_MANAGED_FORBIDDEN:
        return aws_managed_denied(operation, arn)
    rule = _MATRIX[operation].get(state)
    if rule is None:
        return None
    cls, template = rule
    return cls(template.format(arn=arn))


def check(operation: Operation, state: KeyState, manager: KeyManager, *, arn: str) -> None:
    """Raise the error ``decide`` returns, if any."""
    error = decide(operation, state, manager, arn=arn)
    if error is not None:
        raise error
