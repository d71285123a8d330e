"""Steps every rotator shares (AWS's template semantics, idempotent for the token)."""

from __future__ import annotations

from coffer.core import errors
from coffer.rotation.rotators.base import RotationStepError, SecretValue, StepContext

PENDING = "AWSPENDING"
CURRENT = "AWSCURRENT"


async def pending_value(ctx: StepContext) -> SecretValue | None:
    """The AWSPENDING value of this rotation's token, or None while it is still the empty placeholder."""
    try:
        return await ctx.api.get_value(secret_id=ctx.secret_arn, version_id=ctx.token, version_stage=PENDING)
    except errors.NotFound:
        return None


async def check_token_is_pending(ctx: StepContext) -> dict[str, list[str]]:
    """AWS's templates refuse to run unless the token is a version of the secret labelled AWSPENDING (or
    already AWSCURRENT, when finishSecret runs again)."""
    stages = await ctx.api.version_stages(secret_id=ctx.secret_arn)
    labels = stages.get(ctx.token)
    if labels is None:
        raise RotationStepError(f"Version {ctx.token} has no stage for rotation of secret {ctx.secret_arn}.")
    if CURRENT not in labels and PENDING not in labels:
        raise RotationStepError(
            f"Version {ctx.token} is not set as AWSPENDING for rotation of secret {ctx.secret_arn}."
        )
    return stages


async def finish_secret(ctx: StepContext) -> None:
    """Move AWSCURRENT to the token's version (no-op when it is already there)."""
    stages = await ctx.api.version_stages(secret_id=ctx.secret_arn)
    current = next((vid for vid, labels in stages.items() if CURRENT in labels), None)
    if current == ctx.token:
        return
    if ctx.token not in stages:
        raise RotationStepError(f"Version {ctx.token} of secret {ctx.secret_arn} no longer exists.")
    await ctx.api.move_current(secret_id=ctx.secret_arn, to_version_id=ctx.token, from_version_id=current)
