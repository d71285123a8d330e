"""The key-state gate against AWS's whole matrix (which operations each key state allows, and the exact
refusal otherwise), written out here as an independent table."""

from __future__ import annotations

import pytest

from coffer.core import errors
from coffer.kms.model import KeyManager, KeyState
from coffer.kms.state import Operation, check, decide

ARN = "arn:aws:kms:local-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# outcome code -> (AWS error name, message); "ok" means allowed
OUTCOMES: dict[str, tuple[str, str]] = {
    "DIS": ("DisabledException", f"{ARN} is disabled."),  # [1]
    "PD": ("KMSInvalidStateException", f"{ARN} is pending deletion."),  # [3]
    "NPD": ("KMSInvalidStateException", f"{ARN} is not pending deletion."),  # [4]
    "PI": ("KMSInvalidStateException", f"{ARN} is pending import."),  # [5]
    "EXT": (
        "UnsupportedOperationException",
        f"{ARN} origin is EXTERNAL which is not valid for this operation.",
    ),
    "UNAV": ("KMSInvalidStateException", f"{ARN} is unavailable."),
    "UNSUP": ("UnsupportedOperationException", f"{ARN} is unavailable."),
    "CRE": ("KMSInvalidStateException", f"{ARN} is creating."),
    "UPD": ("KMSInvalidStateException", f"{ARN} is updating."),
    "PRD": ("KMSInvalidStateException", f"{ARN} is pending replica deletion."),
}

STATES = (
    KeyState.ENABLED,
    KeyState.DISABLED,
    KeyState.PENDING_DELETION,
    KeyState.PENDING_IMPORT,
    KeyState.UNAVAILABLE,
    KeyState.CREATING,
    KeyState.UPDATING,
    KeyState.PENDING_REPLICA_DELETION,
)

# Columns: Enabled, Disabled, PendingDeletion, PendingImport (AWS's documented table), then the other states:
# Unavailable, Creating, Updating, PendingReplicaDeletion
Op = Operation
MATRIX: dict[Operation, tuple[str, ...]] = {
    Op.DESCRIBE_KEY: ("ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    Op.LIST_ALIASES: ("ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    Op.DELETE_ALIAS: ("ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    Op.CREATE_ALIAS: ("ok", "ok", "PD", "ok", "ok", "ok", "ok", "PRD"),
    Op.UPDATE_ALIAS: ("ok", "ok", "PD", "ok", "ok", "ok", "ok", "PRD"),
    Op.ENABLE_KEY: ("ok", "ok", "PD", "PI", "ok", "CRE", "UPD", "PRD"),
    Op.DISABLE_KEY: ("ok", "ok", "PD", "PI", "ok", "CRE", "UPD", "PRD"),
    Op.SCHEDULE_KEY_DELETION: ("ok", "ok", "PD", "ok", "ok", "ok", "UPD", "PRD"),
    Op.CANCEL_KEY_DELETION: ("NPD", "NPD", "ok", "NPD", "NPD", "NPD", "NPD", "NPD"),
    Op.ENABLE_KEY_ROTATION: ("ok", "DIS", "PD", "EXT", "UNSUP", "CRE", "ok", "PRD"),
    Op.DISABLE_KEY_ROTATION: ("ok", "DIS", "PD", "EXT", "UNSUP", "CRE", "ok", "PRD"),
    Op.GET_KEY_ROTATION_STATUS: ("ok", "ok", "ok", "EXT", "UNSUP", "ok", "ok", "ok"),
    Op.ROTATE_KEY_ON_DEMAND: ("ok", "DIS", "PD", "PI", "UNSUP", "CRE", "ok", "PRD"),
    Op.LIST_KEY_ROTATIONS: ("ok", "ok", "ok", "EXT", "UNSUP", "ok", "ok", "ok"),
    Op.ENCRYPT: ("ok", "DIS", "PD", "PI", "UNAV", "CRE", "ok", "PRD"),
    Op.DECRYPT: ("ok", "DIS", "PD", "PI", "UNAV", "CRE", "ok", "PRD"),
    Op.GENERATE_DATA_KEY: ("ok", "DIS", "PD", "PI", "UNAV", "CRE", "ok", "PRD"),
    Op.GENERATE_DATA_KEY_WITHOUT_PLAINTEXT: ("ok", "DIS", "PD", "PI", "UNAV", "CRE", "ok", "PRD"),
    Op.RE_ENCRYPT: ("ok", "DIS", "PD", "PI", "UNAV", "CRE", "ok", "PRD"),
}

# AWS-managed keys cannot be configured by callers: each of these operations on one is AccessDeniedException.
AWS_MANAGED_DENIED = {
    Op.ENABLE_KEY,
    Op.DISABLE_KEY,
    Op.SCHEDULE_KEY_DELETION,
    Op.CANCEL_KEY_DELETION,
    Op.ENABLE_KEY_ROTATION,
    Op.DISABLE_KEY_ROTATION,
    Op.ROTATE_KEY_ON_DEMAND,
    Op.CREATE_ALIAS,
    Op.UPDATE_ALIAS,
    Op.DELETE_ALIAS,
}

CASES = [(op, state, MATRIX[op][i]) for op in Operation for i, state in enumerate(STATES)]


def test_matrix_covers_every_operation_and_state() -> None:
    assert set(MATRIX) == set(Operation)
    assert set(STATES) == set(KeyState)
    assert all(len(row) == len(STATES) for row in MATRIX.values())


@pytest.mark.parametrize(("operation", "state", "expected"), CASES, ids=lambda x: str(x))
def test_customer_managed_key(operation: Operation, state: KeyState, expected: str) -> None:
    error = decide(operation, state, KeyManager.CUSTOMER, arn=ARN)
    if expected == "ok":
        assert error is None
        check(operation, state, KeyManager.CUSTOMER, arn=ARN)
        return
    code, message = OUTCOMES[expected]
    assert error is not None
    assert (error.code, error.message) == (code, message)
    with pytest.raises(errors.CofferError) as info:
        check(operation, state, KeyManager.CUSTOMER, arn=ARN)
    assert (info.value.code, info.value.message) == (code, message)


@pytest.mark.parametrize(("operation", "state", "expected"), CASES, ids=lambda x: str(x))
def test_aws_managed_key(operation: Operation, state: KeyState, expected: str) -> None:
    error = decide(operation, state, KeyManager.AWS, arn=ARN)
    if operation in AWS_MANAGED_DENIED:
        assert isinstance(error, errors.AccessDenied)
        assert error.code == "AccessDeniedException"
        assert ARN in error.message and operation.value in error.message
    elif expected == "ok":
        assert error is None
    else:
        assert error is not None and (error.code, error.message) == OUTCOMES[expected]


def test_error_kinds_map_to_the_hierarchy() -> None:
    disabled = decide(Op.ENCRYPT, KeyState.DISABLED, KeyManager.CUSTOMER, arn=ARN)
    pending = decide(Op.DECRYPT, KeyState.PENDING_DELETION, KeyManager.CUSTOMER, arn=ARN)
    external = decide(Op.ENABLE_KEY_ROTATION, KeyState.PENDING_IMPORT, KeyManager.CUSTOMER, arn=ARN)
    assert isinstance(disabled, errors.KmsDisabled)
    assert isinstance(pending, errors.KmsInvalidState)
    assert isinstance(external, errors.UnsupportedOperation)
