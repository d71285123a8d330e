"""The gateway's use cases: authorize → run (forward, or answer locally) → audit.

The gateway holds no state and validates nothing that the store validates: a call it accepts is forwarded
unchanged. The only operation it answers itself is GetRandomPassword. Collaborators come in through the
constructor (``__main__`` builds them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import structlog

from coffer.audit import AuditSink
from coffer.core import errors
from coffer.core.password import PasswordRequest, RandomSource, generate_password
from coffer.gateway.authz import Authorize

T = TypeVar("T")

log = structlog.get_logger("coffer.gateway")


class GatewayApp:
    def __init__(self, *, authorize: Authorize, audit: AuditSink, random: RandomSource) -> None:
        self._authorize = authorize
        self._audit = audit
        self._random = random

    async def call(
        self,
        *,
        principal: str | None,
        request_id: str | None,
        action: str,
        resource: str,
        run: Callable[[], Awaitable[T]],
    ) -> T:
        """Authorize ``action`` on ``resource``, run it, and write one audit line with the outcome."""
        audit = partial(
            self._audit.record, principal=principal, action=action, resource=resource, request_id=request_id
        )
        try:
            self._authorize(principal, action, resource)
        except errors.CofferError as exc:
            audit(outcome="denied", error_code=exc.code)
            raise
        try:
            result = await run()
        except (errors.KmsSealed, errors.KmsHsmUnavailable) as exc:
            # A state operators must act on (unseal; bring the HSM token back), named as such; its text names
            # no internal address.
            audit(outcome="failed", error_code=exc.code)
            raise
        except errors.Unavailable as exc:
            audit(outcome="failed", error_code=exc.code)
            # The detail names internal addresses: log it here, give the public caller the generic text.
            log.warning("gateway.dependency_unavailable", action=action, error=exc.message)
            raise errors.Unavailable() from None
        except Exception as exc:
            code = exc.code if isinstance(exc, errors.CofferError) else errors.Internal.default_code
            audit(outcome="failed", error_code=code)
            raise
        audit(outcome="allowed")
        # Rules with a ``reply`` method (``authz.Authorization``) also trim what the caller may not read.
        shape = getattr(self._authorize, "reply", None)
        return shape(principal, action, result) if shape is not None else result

    async def random_password(self, request: PasswordRequest) -> str:
        """GetRandomPassword, answered here (never stored, never logged)."""
        return generate_password(request, self._random)
