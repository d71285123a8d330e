"""What a rotator is, and what it may use. A rotation runs the four AWS steps for one token (the pending
version id); every step must be idempotent for its token, because a crashed or failed rotation is retried
from ``createSecret`` with the same token. Rotators reach secrets only through ``SecretsApi`` (the public
API, under the rotation service's own identity), never through the store's internals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from coffer.core.rotation import STEPS, Step

CREATE_SECRET: str = Step.CREATE_SECRET.value
SET_SECRET: str = Step.SET_SECRET.value
TEST_SECRET: str = Step.TEST_SECRET.value
FINISH_SECRET: str = Step.FINISH_SECRET.value
__all__ = ["CREATE_SECRET", "FINISH_SECRET", "SET_SECRET", "STEPS", "TEST_SECRET"]


@dataclass(frozen=True, slots=True)
class SecretValue:
    arn: str
    name: str
    version_id: str
    secret_string: str | None
    secret_binary: bytes | None
    version_stages: tuple[str, ...]


class SecretsApi(Protocol):
    """The public Secrets Manager API as the rotation service's identity sees it. Errors are CofferErrors
    (``errors.NotFound`` for a missing version or label, as AWS answers)."""

    async def get_value(
        self, *, secret_id: str, version_id: str | None = None, version_stage: str | None = None
    ) -> SecretValue: ...

    async def put_pending_value(self, *, secret_id: str, token: str, secret_string: str) -> None:
        """PutSecretValue(ClientRequestToken=token, VersionStages=["AWSPENDING"]): fills the placeholder."""

    async def version_stages(self, *, secret_id: str) -> dict[str, list[str]]:
        """DescribeSecret's VersionIdsToStages."""

    async def move_current(self, *, secret_id: str, to_version_id: str, from_version_id: str | None) -> None:
        """UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=..., RemoveFromVersionId=...)."""

    async def random_password(
        self,
        *,
        length: int = 32,
        exclude_characters: str = "",
        exclude_punctuation: bool = False,
    ) -> str:
        """GetRandomPassword with AWS's rules."""


@dataclass(frozen=True, slots=True)
class StepContext:
    secret_arn: str
    token: str
    api: SecretsApi


class Rotator(Protocol):
    """One rotation strategy. ``name`` is what RotateSecret takes as RotationLambdaARN for built-ins."""

    name: str

    async def create_secret(self, ctx: StepContext) -> None: ...

    async def set_secret(self, ctx: StepContext) -> None: ...

    async def test_secret(self, ctx: StepContext) -> None: ...

    async def finish_secret(self, ctx: StepContext) -> None: ...


class RotationStepError(Exception):
    """A step could not do its work (target refused the password, connection failed, ...). The message is
    recorded on the attempt and shown to users, so it must never contain a secret value or password.
    ``detail`` (also free of passwords) is recorded too but shown to operators only, and logged."""

    def __init__(self, message: str = "", *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail
        #: The step that failed, filled in by the worker.
        self.step: str | None = None


class TargetUnreachable(RotationStepError):
    """The target could not be used: refused by the target policy, closed, missing, timed out, or not the
    server expected. Callers see the same words (``public``) whatever the cause; ``detail`` says which."""

    def __init__(self, public: str, *, detail: str) -> None:
        super().__init__(public, detail=detail)
        self.public = public

    def __str__(self) -> str:
        if self.step is None:
            return f"A rotation step failed: {self.public}"
        return f"The rotation step {self.step} failed: {self.public}"
