"""``random-value``: for secrets with no target system. createSecret stores a new random value
(GetRandomPassword's rules) as AWSPENDING; setSecret and testSecret have nothing to do; finishSecret moves
AWSCURRENT. When the current value is a JSON object with a ``password`` field, only that field changes (the
rest of the document — user names, hosts — is kept)."""

from __future__ import annotations

import json
from typing import Any

from coffer.core.rotation import RANDOM_VALUE
from coffer.rotation.rotators.base import RotationStepError, StepContext
from coffer.rotation.rotators.common import CURRENT, check_token_is_pending, finish_secret, pending_value

NAME = RANDOM_VALUE
PASSWORD_LENGTH = 32
#: AWS's rotation templates exclude these by default: they break URLs, shells and SQL quoting.
EXCLUDE_CHARACTERS = "/@\"'\\"


class RandomValueRotator:
    name = NAME

    def __init__(
        self, *, length: int = PASSWORD_LENGTH, exclude_characters: str = EXCLUDE_CHARACTERS
    ) -> None:
        self._length = length
        self._exclude = exclude_characters

    async def create_secret(self, ctx: StepContext) -> None:
        await check_token_is_pending(ctx)
        current = await ctx.api.get_value(secret_id=ctx.secret_arn, version_stage=CURRENT)
        if await pending_value(ctx) is not None:
            return
        password = await ctx.api.random_password(length=self._length, exclude_characters=self._exclude)
        await ctx.api.put_pending_value(
            secret_id=ctx.secret_arn,
            token=ctx.token,
            secret_string=_new_value(current.secret_string, password),
        )

    async def set_secret(self, ctx: StepContext) -> None:
        return None  # no target system

    async def test_secret(self, ctx: StepContext) -> None:
        if await pending_value(ctx) is None:
            raise RotationStepError(f"Version {ctx.token} of secret {ctx.secret_arn} has no value to test.")

    async def finish_secret(self, ctx: StepContext) -> None:
        await finish_secret(ctx)


def _new_value(current: str | None, password: str) -> str:
    if current:
        try:
            doc: Any = json.loads(current)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "password" in doc:
            doc["password"] = password
            return json.dumps(doc)
    return password
