"""Bad input, table-driven, against the real store (real kms, real PostgreSQL, gRPC over mTLS).

Each case asserts the AWS error name (ErrorInfo.reason, i.e. ``err.code`` of the CofferError the client
raises), the gRPC status on the wire, the exact message, and that nothing was written (rows in secrets,
versions, labels and outbox are counted before and after)."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.core import errors
from coffer.rpc.status import from_rpc_error
from coffer.testing.wait import eventually

if TYPE_CHECKING:
    from tests.integration.store.conftest import StoreStack

REGION, ACCOUNT = "local-1", "000000000000"
NEED_TOKEN = "You must provide a ClientRequestToken value. We recommend a UUID-type value."
MARKED = "You can't perform this operation on the secret because it was marked for deletion."
NOT_FOUND = "Secrets Manager can't find the specified secret."
INVALID_NAME = (
    "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!"
)
BOTH_VALUES = "You can't specify both a binary secret value and a string secret value in the same secret."


def token() -> str:
    return str(uuid.uuid4())


@dataclass
class World:
    """Secrets in known states, made fresh for each case."""

    live_arn: str
    live_token: str
    disabled_key: str
    pending_key: str
    request_id: str


Expected = str | re.Pattern[str] | Callable[[World], str]


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    request: Callable[[World], Any]
    code: str
    status: grpc.StatusCode
    message: Expected


def kms_detail(code: str) -> Callable[[World], str]:
    return lambda w: (
        f"(Service: AWSKMS; Status Code: 400; Error Code: {code}; Request ID: {w.request_id}; Proxy: null)"
    )


CASES = [
    # --- names and sizes (ValidationException) ---
    Case(
        "create-invalid-name",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(name="bad name", client_request_token=token(), secret_string="x"),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        INVALID_NAME,
    ),
    Case(
        "describe-invalid-secret-id",
        "DescribeSecret",
        lambda w: pb.DescribeSecretRequest(secret_id="semi;colon"),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        INVALID_NAME,
    ),
    Case(
        "create-name-too-long",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(name="n" * 513),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        f"1 validation error detected: Value '{'n' * 513}' at 'name' failed to satisfy constraint: "
        "Member must have length less than or equal to 512",
    ),
    Case(
        "create-oversized-string",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(name="big", client_request_token=token(), secret_string="é" * 32769),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "1 validation error detected: Value at 'secretString' failed to satisfy constraint: "
        "Member must have length less than or equal to 65536",
    ),
    Case(
        "put-oversized-binary",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(
            secret_id="live", client_request_token=token(), secret_binary=b"b" * 65537
        ),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "1 validation error detected: Value at 'secretBinary' failed to satisfy constraint: "
        "Member must have length less than or equal to 65536",
    ),
    Case(
        "put-short-token",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(secret_id="live", client_request_token="abc", secret_string="x"),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "1 validation error detected: Value 'abc' at 'clientRequestToken' failed to satisfy constraint: "
        "Member must have length greater than or equal to 32",
    ),
    Case(
        "put-too-many-stages",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(
            secret_id="live",
            client_request_token=token(),
            secret_string="x",
            version_stages=[f"s{i}" for i in range(21)],
        ),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        re.compile(
            "at 'versionStages' failed to satisfy constraint: "
            "Member must have length less than or equal to 20$"
        ),
    ),
    Case(
        "list-unknown-filter-key",
        "ListSecrets",
        lambda w: pb.ListSecretsRequest(filters=[pb.Filter(key="colour", values=["red"])]),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "1 validation error detected: Value 'colour' at 'filters.1.member.key' failed to satisfy constraint: "
        "Member must satisfy enum value set: [description, name, tag-key, tag-value, primary-region, "
        "owning-service, all]",
    ),
    Case(
        "list-max-results-101",
        "ListSecrets",
        lambda w: pb.ListSecretsRequest(max_results=101),
        "ValidationException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "1 validation error detected: Value '101' at 'maxResults' failed to satisfy constraint: "
        "Member must have value less than or equal to 100",
    ),
    # --- value shape ---
    Case(
        "create-string-and-binary",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(
            name="both", client_request_token=token(), secret_string="s", secret_binary=b"b"
        ),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        BOTH_VALUES,
    ),
    Case(
        "put-string-and-binary",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(
            secret_id="live", client_request_token=token(), secret_string="s", secret_binary=b"b"
        ),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        BOTH_VALUES,
    ),
    Case(
        "create-value-without-token",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(name="tokenless", secret_string="x"),
        "InvalidRequestException",
        grpc.StatusCode.FAILED_PRECONDITION,
        NEED_TOKEN,
    ),
    Case(
        "update-value-without-token",
        "UpdateSecret",
        lambda w: pb.UpdateSecretRequest(secret_id="live", secret_string="x"),
        "InvalidRequestException",
        grpc.StatusCode.FAILED_PRECONDITION,
        NEED_TOKEN,
    ),
    # RotateSecret's own spelling of the missing token, decided before the secret is looked up.
    Case(
        "rotate-without-token",
        "RotateSecret",
        lambda w: pb.RotateSecretRequest(secret_id="live", rotation_lambda_arn="random-value"),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        NEED_TOKEN,
    ),
    Case(
        "rotate-unknown-secret-without-token",
        "RotateSecret",
        lambda w: pb.RotateSecretRequest(secret_id="nobody/home"),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        NEED_TOKEN,
    ),
    Case(
        "put-without-value",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(secret_id="live", client_request_token=token()),
        "InvalidRequestException",
        grpc.StatusCode.FAILED_PRECONDITION,
        "You must provide either SecretString or SecretBinary.",
    ),
    # --- unknown secrets and versions ---
    Case(
        "get-unknown-secret",
        "GetSecretValue",
        lambda w: pb.GetSecretValueRequest(secret_id="nobody/home"),
        "ResourceNotFoundException",
        grpc.StatusCode.NOT_FOUND,
        NOT_FOUND,
    ),
    Case(
        "describe-foreign-region-arn",
        "DescribeSecret",
        lambda w: pb.DescribeSecretRequest(secret_id=w.live_arn.replace(REGION, "eu-west-1")),
        "ResourceNotFoundException",
        grpc.StatusCode.NOT_FOUND,
        NOT_FOUND,
    ),
    Case(
        "put-unknown-secret",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(
            secret_id="nobody/home", client_request_token=token(), secret_string="x"
        ),
        "ResourceNotFoundException",
        grpc.StatusCode.NOT_FOUND,
        NOT_FOUND,
    ),
    Case(
        "delete-unknown-secret",
        "DeleteSecret",
        lambda w: pb.DeleteSecretRequest(secret_id="nobody/home"),
        "ResourceNotFoundException",
        grpc.StatusCode.NOT_FOUND,
        NOT_FOUND,
    ),
    Case(
        "get-unknown-version-id",
        "GetSecretValue",
        lambda w: pb.GetSecretValueRequest(secret_id="live", version_id="0" * 36),
        "ResourceNotFoundException",
        grpc.StatusCode.NOT_FOUND,
        f"Secrets Manager can't find the specified secret value for VersionId: {'0' * 36}",
    ),
    Case(
        "get-unknown-stage",
        "GetSecretValue",
        lambda w: pb.GetSecretValueRequest(secret_id="live", version_stage="nope"),
        "ResourceNotFoundException",
        grpc.StatusCode.NOT_FOUND,
        "Secrets Manager can't find the specified secret value for staging label: nope",
    ),
    Case(
        "get-secret-without-value",
        "GetSecretValue",
        lambda w: pb.GetSecretValueRequest(secret_id="empty"),
        "ResourceNotFoundException",
        grpc.StatusCode.NOT_FOUND,
        "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT",
    ),
    Case(
        "get-stage-not-on-version",
        "GetSecretValue",
        lambda w: pb.GetSecretValueRequest(
            secret_id="live", version_id=w.live_token, version_stage="AWSPREVIOUS"
        ),
        "InvalidRequestException",
        grpc.StatusCode.FAILED_PRECONDITION,
        "You provided a VersionStage that is not associated to the provided VersionId.",
    ),
    # --- tokens and names already in use ---
    Case(
        "put-reused-token-other-value",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(
            secret_id="live", client_request_token=w.live_token, secret_string="other"
        ),
        "ResourceExistsException",
        grpc.StatusCode.ALREADY_EXISTS,
        lambda w: (
            f"You can't use ClientRequestToken {w.live_token} because that value is already in use for a "
            f"version of secret {w.live_arn}."
        ),
    ),
    Case(
        "update-reused-token-other-value",
        "UpdateSecret",
        lambda w: pb.UpdateSecretRequest(
            secret_id="live", client_request_token=w.live_token, secret_binary=b"other"
        ),
        "ResourceExistsException",
        grpc.StatusCode.ALREADY_EXISTS,
        lambda w: (
            f"You can't use ClientRequestToken {w.live_token} because that value is already in use for a "
            f"version of secret {w.live_arn}."
        ),
    ),
    Case(
        "create-existing-name-reused-token-other-value",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(
            name="live", client_request_token=w.live_token, secret_string="other"
        ),
        "ResourceExistsException",
        grpc.StatusCode.ALREADY_EXISTS,
        lambda w: (
            f"You can't use ClientRequestToken {w.live_token} because that value is already in use for a "
            f"version of secret {w.live_arn}."
        ),
    ),
    Case(
        "create-existing-name",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(name="live", client_request_token=token(), secret_string="x"),
        "ResourceExistsException",
        grpc.StatusCode.ALREADY_EXISTS,
        "The operation failed because the secret live already exists.",
    ),
    # --- secrets scheduled for deletion ---
    *[
        Case(
            f"{name}-scheduled-for-deletion",
            method,
            req,
            "InvalidRequestException",
            grpc.StatusCode.FAILED_PRECONDITION,
            MARKED,
        )
        for name, method, req in [
            ("get", "GetSecretValue", lambda w: pb.GetSecretValueRequest(secret_id="doomed")),
            (
                "put",
                "PutSecretValue",
                lambda w: pb.PutSecretValueRequest(
                    secret_id="doomed", client_request_token=token(), secret_string="x"
                ),
            ),
            ("update", "UpdateSecret", lambda w: pb.UpdateSecretRequest(secret_id="doomed", description="d")),
            (
                "tag",
                "TagResource",
                lambda w: pb.TagResourceRequest(secret_id="doomed", tags=[pb.Tag(key="k", value="v")]),
            ),
            ("untag", "UntagResource", lambda w: pb.UntagResourceRequest(secret_id="doomed", tag_keys=["k"])),
            (
                "stage",
                "UpdateSecretVersionStage",
                lambda w: pb.UpdateSecretVersionStageRequest(
                    secret_id="doomed", version_stage="x", move_to_version_id="1" * 36
                ),
            ),
            ("delete-again", "DeleteSecret", lambda w: pb.DeleteSecretRequest(secret_id="doomed")),
        ]
    ],
    Case(
        "create-name-scheduled-for-deletion",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(name="doomed", client_request_token=token(), secret_string="x"),
        "InvalidRequestException",
        grpc.StatusCode.FAILED_PRECONDITION,
        "You can't create this secret because a secret with this name is already scheduled for deletion.",
    ),
    # --- deletion parameters ---
    *[
        Case(
            f"delete-window-{days}",
            "DeleteSecret",
            functools.partial(
                lambda w, days: pb.DeleteSecretRequest(secret_id="live", recovery_window_in_days=days),
                days=days,
            ),
            "InvalidParameterException",
            grpc.StatusCode.INVALID_ARGUMENT,
            "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).",
        )
        for days in (0, 6, 31)
    ],
    Case(
        "delete-window-and-force",
        "DeleteSecret",
        lambda w: pb.DeleteSecretRequest(
            secret_id="live", recovery_window_in_days=10, force_delete_without_recovery=True
        ),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
    ),
    # --- labels ---
    Case(
        "move-label-without-remove-from",
        "UpdateSecretVersionStage",
        lambda w: pb.UpdateSecretVersionStageRequest(
            secret_id="live", version_stage="AWSCURRENT", move_to_version_id=w.live_token.replace("-", "0", 1)
        ),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        # the target must exist for the label check to be reached: see the world (a second version exists)
        lambda w: (
            "The parameter RemoveFromVersionId can't be empty. Staging label AWSCURRENT is currently "
            f"attached to version {w.live_token}, so you must explicitly reference that version in "
            "RemoveFromVersionId."
        ),
    ),
    Case(
        "move-label-to-unknown-version",
        "UpdateSecretVersionStage",
        lambda w: pb.UpdateSecretVersionStageRequest(
            secret_id="live", version_stage="x", move_to_version_id="9" * 36
        ),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Secrets Manager can't find the specified secret version for VersionId: {'9' * 36}",
    ),
    Case(
        "more-than-twenty-labels",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(
            secret_id="live",
            client_request_token=token(),
            secret_string="x",
            version_stages=[f"L{i}" for i in range(20)],
        ),
        "LimitExceededException",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        re.compile(r"^A secret can have at most 20 staging labels across all of its versions"),
    ),
    # --- KMS keys ---
    Case(
        "get-under-disabled-key",
        "GetSecretValue",
        lambda w: pb.GetSecretValueRequest(secret_id="under-disabled"),
        "DecryptionFailure",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda w: (
            f"Secrets Manager can't decrypt the secret value: {w.disabled_key} is disabled. "
            + kms_detail("DisabledException")(w)
        ),
    ),
    Case(
        "put-under-disabled-key",
        "PutSecretValue",
        lambda w: pb.PutSecretValueRequest(
            secret_id="under-disabled", client_request_token=token(), secret_string="x"
        ),
        "EncryptionFailure",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda w: (
            f"Secrets Manager can't encrypt the secret value: {w.disabled_key} is disabled. "
            + kms_detail("DisabledException")(w)
        ),
    ),
    Case(
        "create-under-disabled-key",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(
            name="new", client_request_token=token(), secret_string="x", kms_key_id=w.disabled_key
        ),
        "EncryptionFailure",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda w: (
            f"Secrets Manager can't encrypt the secret value: {w.disabled_key} is disabled. "
            + kms_detail("DisabledException")(w)
        ),
    ),
    Case(
        "get-under-pending-deletion-key",
        "GetSecretValue",
        lambda w: pb.GetSecretValueRequest(secret_id="under-pending"),
        "DecryptionFailure",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda w: (
            f"Secrets Manager can't decrypt the secret value: {w.pending_key} is pending deletion. "
            + kms_detail("KMSInvalidStateException")(w)
        ),
    ),
    Case(
        "update-under-pending-deletion-key",
        "UpdateSecret",
        lambda w: pb.UpdateSecretRequest(
            secret_id="under-pending", client_request_token=token(), secret_string="x"
        ),
        "EncryptionFailure",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda w: (
            f"Secrets Manager can't encrypt the secret value: {w.pending_key} is pending deletion. "
            + kms_detail("KMSInvalidStateException")(w)
        ),
    ),
    Case(
        "create-with-unknown-key",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(
            name="new", client_request_token=token(), secret_string="x", kms_key_id="alias/nope"
        ),
        "EncryptionFailure",
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda w: (
            "Secrets Manager can't encrypt the secret value: "
            f"Alias arn:aws:kms:{REGION}:{ACCOUNT}:alias/nope is not found. "
            + kms_detail("NotFoundException")(w)
        ),
    ),
    # --- misc ---
    Case(
        "list-bad-next-token",
        "ListSecrets",
        lambda w: pb.ListSecretsRequest(next_token="not-a-token"),
        "InvalidNextTokenException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "The NextToken value is not valid.",
    ),
    Case(
        "batch-ids-and-filters",
        "BatchGetSecretValue",
        lambda w: pb.BatchGetSecretValueRequest(
            secret_id_list=["live"], filters=[pb.Filter(key="name", values=["l"])]
        ),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "Either SecretIdList or Filters must be specified, but not both.",
    ),
    Case(
        "tag-reserved-prefix",
        "TagResource",
        lambda w: pb.TagResourceRequest(secret_id="live", tags=[pb.Tag(key="aws:owner", value="me")]),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "The tag key aws:owner is not allowed: tag keys beginning with aws: are reserved for AWS use.",
    ),
    Case(
        "replica-in-own-region",
        "CreateSecret",
        lambda w: pb.CreateSecretRequest(name="rep", add_replica_regions=[pb.ReplicaRegion(region=REGION)]),
        "InvalidParameterException",
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid replica region.",
    ),
]


async def wait_evicted(stack: StoreStack, key_arn: str) -> None:
    """The kms NOTIFYs coffer_kms_key_changed; the store's listener evicts that key's cached data keys."""
    await eventually(
        lambda: not stack.store_runtime.kms.cache.holds(key_arn),
        timeout=2,
        interval=0.01,
        message=f"data keys of {key_arn} to be evicted",
    )


@pytest.fixture
async def world(stack: StoreStack) -> World:
    s = stack.store
    live_token = token()
    live = await s.CreateSecret(
        pb.CreateSecretRequest(name="live", client_request_token=live_token, secret_string="one")
    )
    # a second version whose id differs from the first only in one character (used by the label case)
    await s.PutSecretValue(
        pb.PutSecretValueRequest(
            secret_id="live",
            client_request_token=live_token.replace("-", "0", 1),
            secret_string="two",
            version_stages=["extra"],
        )
    )
    await s.CreateSecret(
        pb.CreateSecretRequest(name="doomed", client_request_token=token(), secret_string="x")
    )
    await s.DeleteSecret(pb.DeleteSecretRequest(secret_id="doomed", recovery_window_in_days=7))
    await s.CreateSecret(pb.CreateSecretRequest(name="empty"))
    disabled = (
        await stack.kms.CreateKey(kms_pb2.CreateKeyRequest(description="to disable"))
    ).key_metadata.arn
    pending = (await stack.kms.CreateKey(kms_pb2.CreateKeyRequest(description="to delete"))).key_metadata.arn
    await s.CreateSecret(
        pb.CreateSecretRequest(
            name="under-disabled", client_request_token=token(), secret_string="d", kms_key_id=disabled
        )
    )
    await s.CreateSecret(
        pb.CreateSecretRequest(
            name="under-pending", client_request_token=token(), secret_string="p", kms_key_id=pending
        )
    )
    await stack.kms.DisableKey(kms_pb2.DisableKeyRequest(key_id=disabled))
    await stack.kms.ScheduleKeyDeletion(
        kms_pb2.ScheduleKeyDeletionRequest(key_id=pending, pending_window_in_days=7)
    )
    await wait_evicted(stack, disabled)
    await wait_evicted(stack, pending)
    return World(
        live_arn=live.arn,
        live_token=live_token,
        disabled_key=disabled,
        pending_key=pending,
        request_id=f"req-{uuid.uuid4().hex}",
    )


def check_message(actual: str, expected: Expected, world: World) -> None:
    if isinstance(expected, re.Pattern):
        assert expected.search(actual), actual
    elif isinstance(expected, str):
        assert actual == expected
    else:
        assert actual == expected(world)


async def _check_case(stack: StoreStack, world: World, case: Case) -> None:
    before = await stack.counts()
    # on the wire: the gRPC status, ErrorInfo.reason and the message
    with pytest.raises(grpc.aio.AioRpcError) as wire:
        await getattr(stack.raw, case.method)(
            case.request(world), metadata=(("x-request-id", world.request_id),)
        )
    assert wire.value.code() == case.status
    rebuilt = from_rpc_error(wire.value)
    assert rebuilt.code == case.code
    check_message(wire.value.details() or "", case.message, world)
    # through coffer.rpc.channel: a CofferError whose code is the AWS error name
    with pytest.raises(errors.CofferError) as raised:
        await getattr(stack.store, case.method)(case.request(world))
    assert raised.value.code == case.code
    assert type(raised.value) is type(rebuilt)
    assert await stack.counts() == before


async def test_bad_input(stack: StoreStack, world: World) -> None:
    """Every case against one world: each must fail and write nothing (checked per case), so the cases
    cannot disturb each other; a stack per case cost about a second each."""
    failures: list[str] = []
    for case in CASES:
        try:
            await _check_case(stack, world, case)
        except (AssertionError, pytest.fail.Exception) as exc:  # the latter: pytest.raises' "DID NOT RAISE"
            failures.append(f"{case.id}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    assert len(CASES) > 40
    assert not failures, "\n".join(failures)


async def test_keys_work_again_once_usable(stack: StoreStack, world: World) -> None:
    s = stack.store
    await stack.kms.EnableKey(kms_pb2.EnableKeyRequest(key_id=world.disabled_key))
    assert (await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="under-disabled"))).secret_string == "d"
    await stack.kms.CancelKeyDeletion(kms_pb2.CancelKeyDeletionRequest(key_id=world.pending_key))
    await stack.kms.EnableKey(kms_pb2.EnableKeyRequest(key_id=world.pending_key))
    assert (await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="under-pending"))).secret_string == "p"
    put = await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="under-pending", client_request_token=token(), secret_string="p2")
    )
    assert list(put.version_stages) == ["AWSCURRENT"]


async def test_a_failure_late_in_the_transaction_leaves_nothing_behind(
    stack: StoreStack, world: World
) -> None:
    """Make the very last statement of a write (the outbox insert) fail: the version, its labels and the
    pruning must all roll back with it."""
    await stack.db.execute(
        """
        CREATE FUNCTION store.fail_outbox() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'outbox unavailable'; END $$;
        CREATE TRIGGER fail_outbox BEFORE INSERT ON store.outbox
            FOR EACH ROW EXECUTE FUNCTION store.fail_outbox();
        """
    )
    before = await stack.counts()
    labels_before = await stack.db.fetch(
        "SELECT label, version_id FROM store.labels ORDER BY label, version_id"
    )
    with pytest.raises(errors.Internal):
        await stack.store.PutSecretValue(
            pb.PutSecretValueRequest(secret_id="live", client_request_token=token(), secret_string="new")
        )
    with pytest.raises(errors.Internal):
        await stack.store.CreateSecret(
            pb.CreateSecretRequest(name="fresh", client_request_token=token(), secret_string="x")
        )
    with pytest.raises(errors.Internal):
        await stack.store.UpdateSecretVersionStage(
            pb.UpdateSecretVersionStageRequest(
                secret_id="live",
                version_stage="extra",
                remove_from_version_id=world.live_token.replace("-", "0", 1),
            )
        )
    assert await stack.counts() == before
    assert (
        await stack.db.fetch("SELECT label, version_id FROM store.labels ORDER BY label, version_id")
        == labels_before
    )
    assert (
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id="live"))
    ).secret_string == "one"
