"""The gateway's use cases: throttle → authorize → run (forward, or answer locally) → audit.

The gateway holds no state but its request-rate buckets (``coffer.core.throttle``, per replica) and
validates nothing that the store validates: a call it accepts is forwarded unchanged. The only operation it
answers itself is GetRandomPassword. Collaborators come in through the constructor (``__main__`` builds
them).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import structlog

from coffer.audit import AuditSink
from coffer.audit_trail import AuditTrail, call_event
from coffer.core import errors
from coffer.core.authorize import authorize
from coffer.core.password import PasswordRequest, RandomSource, generate_password
from coffer.core.principal import PrincipalKind
from coffer.core.throttle import Throttle
from coffer.gateway.authz import Authorize
from coffer.rpc import context as ctx

T = TypeVar("T")

log = structlog.get_logger("coffer.gateway")


@dataclass(frozen=True, slots=True)
class TrailCall:
    """What the audit trail needs of a public call the gateway may record itself: its eventSource and
    eventName, the request, and whether the gateway answers it (then every outcome is the gateway's to
    record; else only its own refusal, the serving service recording the rest)."""

    event_source: str
    event_name: str
    request: Any
    answered_here: bool


class GatewayApp:
    def __init__(
        self,
        *,
        authorize: Authorize,
        audit: AuditSink,
        random: RandomSource,
        trail: AuditTrail | None = None,
        region: str = "",
        throttle: Throttle | None = None,
    ) -> None:
        self._authorize = authorize
        self._audit = audit
        self._random = random
        self._trail = trail
        self._region = region
        self._throttle = throttle

    async def _trail_record(
        self,
        call: TrailCall | None,
        response: Any,
        error: errors.CofferError | None,
        *,
        required: bool = False,
    ) -> None:
        """Store the event of a call the gateway refused or answered (through the store's Append). A refusal's
        event is best effort (the call is refused either way: a lost event is logged); an answer the gateway
        gives itself is ``required``: when its event cannot be stored the answer is withheld (fail closed)."""
        if self._trail is None or call is None:
            return
        event = call_event(
            event_source=call.event_source,
            event_name=call.event_name,
            region=self._region,
            caller=ctx.current_caller(),
            request=call.request,
            response=response,
            error=error,
        )
        try:
            await self._trail.record(event)
        except Exception as exc:
            log.warning("gateway.audit_trail_failed", event_id=event.event_id, error_type=type(exc).__name__)
            if required:
                raise errors.Unavailable(
                    "The audit trail could not be written; the call was not answered."
                ) from None

    async def call(
        self,
        *,
        principal: str | None,
        request_id: str | None,
        action: str,
        resource: str,
        run: Callable[[], Awaitable[T]],
        trail: TrailCall | None = None,
    ) -> T:
        """Authorize ``action`` on ``resource``, run it, and write one audit line with the outcome."""
        audit = partial(
            self._audit.record, principal=principal, action=action, resource=resource, request_id=request_id
        )
        local = trail if trail is not None and trail.answered_here else None
        try:
            if self._throttle is not None:
                self._admit(action)
            self._authorize(principal, action, resource)
            if local is not None:
                self._decide_here(action)
        except errors.CofferError as exc:
            audit(outcome="denied", error_code=exc.code)
            await self._trail_record(trail, None, exc)
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
            await self._trail_record(
                local, None, exc if isinstance(exc, errors.CofferError) else errors.Internal()
            )
            raise
        audit(outcome="allowed")
        await self._trail_record(local, result, None, required=True)
        # Rules with a ``reply`` method (``authz.Authorization``) also trim what the caller may not read.
        shape = getattr(self._authorize, "reply", None)
        return shape(principal, action, result) if shape is not None else result

    async def stream(
        self,
        *,
        principal: str | None,
        request_id: str | None,
        action: str,
        resource: str,
        open_stream: Callable[[], AsyncGenerator[T, None]],
        trail: TrailCall | None = None,
    ) -> AsyncGenerator[T, None]:
        """A server-streaming call (WatchSecrets): throttled and authorized like :meth:`call`, then its
        messages pass through. One audit line: ``allowed`` once the first message arrives (the serving
        service accepted the stream, and recorded the call in the trail), or the failure before it. A failure
        after that ends the stream with its error (a dependency's detail is logged, not shown)."""
        audit = partial(
            self._audit.record, principal=principal, action=action, resource=resource, request_id=request_id
        )
        try:
            if self._throttle is not None:
                self._admit(action)
            self._authorize(principal, action, resource)
        except errors.CofferError as exc:
            audit(outcome="denied", error_code=exc.code)
            await self._trail_record(trail, None, exc)
            raise
        opened = False
        try:
            async with contextlib.aclosing(open_stream()) as messages:
                async for message in messages:
                    if not opened:
                        opened = True
                        audit(outcome="allowed")
                    yield message
        except (errors.KmsSealed, errors.KmsHsmUnavailable) as exc:
            if not opened:
                audit(outcome="failed", error_code=exc.code)
            raise
        except errors.Unavailable as exc:
            if not opened:
                audit(outcome="failed", error_code=exc.code)
            log.warning("gateway.dependency_unavailable", action=action, error=exc.message)
            raise errors.Unavailable() from None
        except errors.CofferError as exc:
            if not opened:
                audit(outcome="failed", error_code=exc.code)
            raise
        if not opened:
            audit(outcome="allowed")

    def _admit(self, action: str) -> None:
        """Refuse (``ThrottlingException``) a call over its caller's or its account's rate; Coffer's own
        services are not throttled. The rate counts calls, allowed or not, like AWS's quotas."""
        caller = ctx.current_caller()
        if caller is not None and caller.kind is not PrincipalKind.SERVICE and self._throttle is not None:
            self._throttle.check(caller.account, caller.arn, action)

    @staticmethod
    def _decide_here(action: str) -> None:
        """A call the gateway answers itself (GetRandomPassword) is decided here, by the caller's identity
        policies (it names no resource); Coffer's own services (``service/*``) are not IAM principals."""
        caller = ctx.current_caller()
        if caller is None:
            raise errors.AccessDenied(f"An unauthenticated caller is not authorized to perform: {action}")
        if caller.kind is not PrincipalKind.SERVICE:
            authorize(caller, action)

    async def random_password(self, request: PasswordRequest) -> str:
        """GetRandomPassword, answered here (never stored, never logged)."""
        return generate_password(request, self._random)
