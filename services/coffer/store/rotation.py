"""The store's rotation use cases: RotateSecret, CancelRotateSecret, ListRotationAttempts, the
registry of custom rotation functions, and the bookkeeping the rotation service does through the internal
``RotationControlService`` (due rotations, leases, steps, outcomes).

PostgreSQL is the truth about every rotation: an attempt row per ClientRequestToken, a lease per try, a row
per step. Every write is one transaction that locks the secret row first (then the attempt), so RotateSecret,
CancelRotateSecret, a scheduled start and a completion of the same secret never interleave. Protobuf never
reaches this module.
"""

from __future__ import annotations

import math
import re
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from coffer.clock import Clock
from coffer.core import errors, listing, schedule
from coffer.core import rotation as machine
from coffer.core import versions as v
from coffer.core.model import AWSCURRENT, AWSPENDING, RotationRules
from coffer.core.rotation import BUILTIN_ROTATORS, MAX_ERROR, STEP_STATUSES, STEPS, RotationPolicy, Trigger
from coffer.core.targets import split_endpoint
from coffer.core.validation import MAX_LIST_RESULTS, NEED_TOKEN_MESSAGE, Checker
from coffer.store.app import StoreApp, StoreConfig, Tx, check_writable
from coffer.store.records import AttemptRow, DueSecret, FunctionRow, LockedSecret, RotationConfig
from coffer.targets import TargetGuard

log = structlog.get_logger("coffer.store.rotation")

NO_ROTATOR_MESSAGE = "No Lambda rotation function ARN is associated with this secret."
IN_PROGRESS_MESSAGE = "A previous rotation isn't complete. That rotation will be reattempted."
CANNOT_INVOKE_MESSAGE = (
    "Secrets Manager cannot invoke the specified Lambda function. Ensure that the function policy grants "
    "access to the principal secretsmanager.amazonaws.com."
)
NEVER_CONFIGURED_MESSAGE = (
    "The secret has never been configured for rotation, so there is no rotation to cancel. Call RotateSecret "
    "with a RotationLambdaARN to configure it."
)
FUNCTION_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENDPOINT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")


# --- collaborators ------------------------------------------------------------------------------------------


class RotationTx(Tx, Protocol):
    async def lock_by_arn(self, arn: str) -> LockedSecret | None: ...

    async def rotation_config(self, secret_id: int) -> RotationConfig: ...

    async def update_rotation(self, secret_id: int, changes: dict[str, Any]) -> None: ...

    async def insert_placeholder(self, secret_id: int, version_id: str, *, now: datetime) -> None: ...

    async def open_attempt(self, secret_id: int) -> AttemptRow | None: ...

    async def attempt(self, arn: str, token: str) -> AttemptRow | None: ...

    async def insert_attempt(
        self,
        secret_id: int,
        *,
        token: str,
        rotator: str,
        rotate_immediately: bool,
        trigger: str,
        state: machine.Attempt,
        now: datetime,
    ) -> None: ...

    async def save_attempt(self, attempt_id: int, state: machine.Attempt) -> None: ...

    async def record_step(
        self,
        attempt_id: int,
        *,
        try_number: int,
        step: str,
        status: str,
        worker_id: str,
        error: str | None,
        now: datetime,
    ) -> None: ...

    async def insert_function(
        self, *, name: str, arn: str, endpoint: str, ca_pem: str, server_name: str | None, now: datetime
    ) -> FunctionRow | None: ...

    async def delete_function(self, name: str) -> None: ...

    async def function_users(self, arn: str) -> list[str]: ...

    async def notify_rotation(self) -> None: ...


class RotationRepository(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[RotationTx]: ...

    async def secret_head(self, ref: Any) -> tuple[int, str, str] | None: ...

    async def attempts(self, secret_id: int, *, limit: int, before_id: int | None) -> list[AttemptRow]: ...

    async def due_secrets(self, now: datetime, *, limit: int) -> list[DueSecret]: ...

    async def claimable_attempts(self, now: datetime, *, limit: int) -> list[AttemptRow]: ...

    async def functions(self) -> list[FunctionRow]: ...

    async def function(self, *, name: str | None = None, arn: str | None = None) -> FunctionRow | None: ...


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotateResult:
    arn: str
    name: str
    version_id: str | None


@dataclass(frozen=True, slots=True)
class AttemptsResult:
    arn: str
    name: str
    attempts: list[AttemptRow]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class Job:
    """What the scheduler puts on the queue (``store.v1.RotationJob``)."""

    secret_arn: str
    token: str
    rotator: str
    rotate_immediately: bool
    try_number: int


@dataclass(frozen=True, slots=True)
class Lease:
    acquired: bool
    reason: str
    job: Job | None


@dataclass(frozen=True, slots=True)
class FailOutcome:
    final: bool
    next_try_seconds: int


def _job(attempt: AttemptRow, *, try_number: int) -> Job:
    return Job(
        secret_arn=attempt.secret_arn,
        token=attempt.token,
        rotator=attempt.rotator,
        rotate_immediately=attempt.rotate_immediately,
        try_number=try_number,
    )


def _pending_elsewhere(locked: LockedSecret) -> str | None:
    """The version holding AWSPENDING when it is not also AWSCURRENT (= a rotation in progress)."""
    pending = locked.labels.get(AWSPENDING)
    if pending is not None and pending != locked.labels.get(AWSCURRENT):
        return pending
    return None


def _schedule(rules: RotationRules | None) -> schedule.Schedule | None:
    return schedule.parse_rules(rules) if rules is not None else None


class RotationApp:
    def __init__(
        self,
        *,
        repo: RotationRepository,
        store: StoreApp,
        config: StoreConfig,
        clock: Clock,
        policy: RotationPolicy | None = None,
        targets: TargetGuard | None = None,
    ) -> None:
        """``targets``: where rotation functions may be (the rotation target policy; default: nothing set)."""
        self._targets = targets or TargetGuard.default()
        self._repo = repo
        self._store = store
        self._sealer = store.sealer
        self._config = config
        self._clock = clock
        self._policy = policy or RotationPolicy()

    # --- helpers -------------------------------------------------------------------------------------------

    def function_arn(self, name: str) -> str:
        cfg = self._config
        return f"arn:{cfg.partition}:lambda:{cfg.region}:{cfg.account}:function:{name}"

    async def _resolve_rotator(self, given: str) -> str:
        if given in BUILTIN_ROTATORS:
            return given
        if await self._repo.function(arn=given) is not None:
            return given
        raise errors.AccessDenied(CANNOT_INVOKE_MESSAGE)

    async def _start(
        self,
        tx: RotationTx,
        locked: LockedSecret,
        *,
        token: str,
        rotator: str,
        rotate_immediately: bool,
        trigger: Trigger,
        now: datetime,
    ) -> None:
        """Create the AWSPENDING version (valueless placeholder, or for a configuration test a copy of
        AWSCURRENT) and the attempt row, and wake the scheduler at commit."""
        old = dict(locked.labels)
        new = {**old, AWSPENDING: token}
        v.check_label_cap(new)
        labelled = set(new.values()) | {token}
        facts = [
            v.VersionFacts(version_id=vid, created_date=meta.created_date, labelled=vid in labelled)
            for vid, meta in locked.versions.items()
        ]
        doomed = v.plan_prune(facts, now=now, incoming=1)
        if rotate_immediately:
            await tx.insert_placeholder(locked.id, token, now=now)
        else:
            current = old.get(AWSCURRENT)
            stored = await tx.stored_values(locked.id, [current]) if current else []
            if not stored:
                raise errors.InvalidRequest(
                    "RotateImmediately=false tests the rotation with a copy of the AWSCURRENT value, and "
                    "this secret has none: put a value first."
                )
            value = await self._sealer.open(arn=locked.arn, stored=stored[0])
            sealed = await self._sealer.seal(
                arn=locked.arn, version_id=token, key_id=locked.kms_key_id, value=value
            )
            await tx.insert_version(locked.id, token, sealed, now=now)
        await tx.replace_labels(locked.id, old, new)
        await tx.delete_versions(locked.id, doomed)
        await tx.insert_attempt(
            locked.id,
            token=token,
            rotator=rotator,
            rotate_immediately=rotate_immediately,
            trigger=trigger,
            state=machine.start(now),
            now=now,
        )
        await tx.notify_rotation()

    async def _drop_test_copy(self, tx: RotationTx, locked: LockedSecret, token: str) -> None:
        """Remove a configuration test's temporary AWSPENDING version."""
        old = dict(locked.labels)
        new = {label: vid for label, vid in old.items() if vid != token}
        await tx.replace_labels(locked.id, old, new)
        await tx.delete_versions(locked.id, [token])

    # --- RotateSecret / CancelRotateSecret ------------------------------------------------------------------

    async def rotate_secret(
        self,
        *,
        secret_id: str,
        token: str | None,
        rotation_lambda_arn: str | None,
        rules: RotationRules | None,
        rotate_immediately: bool | None,
    ) -> RotateResult:
        c = Checker()
        c.secret_id(secret_id)
        c.token(token)
        c.length("rotationLambdaARN", rotation_lambda_arn, min_len=0, max_len=2048)
        if rules is not None:
            c.length("rotationRules.duration", rules.duration, min_len=2, max_len=3)
        c.done()
        # AWS refuses a RotateSecret without a token before it looks the secret up (so a missing secret
        # answers this too); SDKs and the CLI fill one in. Scheduled rotations never come through here: the
        # store mints their token itself (``_start_scheduled``).
        if token is None:
            raise errors.InvalidParameter(NEED_TOKEN_MESSAGE)
        new_schedule = _schedule(rules)
        given = rotation_lambda_arn or None
        if given is not None:
            await self._resolve_rotator(given)
        immediately = True if rotate_immediately is None else rotate_immediately
        ref = self._store.ref(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            check_writable(locked)
            config = await tx.rotation_config(locked.id)
            rotator = given or config.rotator
            if rotator is None:
                raise errors.InvalidRequest(NO_ROTATOR_MESSAGE)
            if _pending_elsewhere(locked) is not None or await tx.open_attempt(locked.id) is not None:
                raise errors.InvalidRequest(IN_PROGRESS_MESSAGE)
            if token in locked.versions:
                raise errors.AlreadyExists(v.token_in_use_message(token, locked.arn))
            effective_rules = rules if rules is not None else config.rules
            sched = new_schedule if rules is not None else _schedule(config.rules)
            base = now if immediately else (config.last_rotated or now)
            next_rotation = sched.next_window_after(now, base=base) if sched is not None else None
            changes: dict[str, Any] = {
                "rotation_enabled": True,
                "rotation_rotator": rotator,
                "rotation_lambda_arn": given or config.lambda_arn or rotator,
                "next_rotation_at": next_rotation,
            }
            if rules is not None:
                changes["rotation_rules"] = effective_rules
            await tx.update_rotation(locked.id, changes)
            await self._start(
                tx,
                locked,
                token=token,
                rotator=rotator,
                rotate_immediately=immediately,
                trigger=Trigger.API,
                now=now,
            )
            await tx.record_change(
                locked.id,
                event="RotateSecret",
                now=now,
                version_id=token,
                payload={"rotator": rotator, "rotate_immediately": immediately},
            )
        log.info("rotation.requested", arn=locked.arn, token=token, rotator=rotator, immediately=immediately)
        return RotateResult(arn=locked.arn, name=locked.name, version_id=token)

    async def cancel_rotate_secret(self, *, secret_id: str) -> RotateResult:
        c = Checker()
        c.secret_id(secret_id)
        c.done()
        ref = self._store.ref(secret_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_existing(ref)
            check_writable(locked)
            config = await tx.rotation_config(locked.id)
            if config.enabled is None:
                raise errors.InvalidRequest(NEVER_CONFIGURED_MESSAGE)
            version_id = _pending_elsewhere(locked)
            attempt = await tx.open_attempt(locked.id)
            if attempt is not None:
                await tx.save_attempt(attempt.id, machine.cancel(attempt.state, token=attempt.token, now=now))
                if not attempt.rotate_immediately:
                    await self._drop_test_copy(tx, locked, attempt.token)
                    version_id = None
                else:
                    version_id = attempt.token
            await tx.update_rotation(locked.id, {"rotation_enabled": False, "next_rotation_at": None})
            await tx.record_change(locked.id, event="CancelRotateSecret", now=now, version_id=version_id)
        log.info("rotation.cancelled", arn=locked.arn, token=version_id)
        return RotateResult(arn=locked.arn, name=locked.name, version_id=version_id)

    # --- history --------------------------------------------------------------------------------------------

    async def list_rotation_attempts(
        self, *, secret_id: str, max_results: int | None, next_token: str | None
    ) -> AttemptsResult:
        c = Checker()
        c.secret_id(secret_id)
        c.number("maxResults", max_results, min_value=1, max_value=MAX_LIST_RESULTS)
        c.next_token(next_token)
        c.done()
        head = await self._repo.secret_head(self._store.ref(secret_id))
        if head is None:
            raise errors.NotFound()
        sid, arn, name = head
        fingerprint = listing.query_fingerprint("rotation-attempts", arn)
        before: int | None = None
        if next_token is not None:
            key = listing.decode_token(next_token, fingerprint=fingerprint)["k"]
            if not isinstance(key, int):
                raise errors.InvalidNextToken()
            before = key
        limit = max_results or 20
        rows = await self._repo.attempts(sid, limit=limit + 1, before_id=before)
        page, token = rows[:limit], None
        if len(rows) > limit:
            token = listing.encode_token({"v": 1, "q": fingerprint, "k": page[-1].id})
        return AttemptsResult(arn=arn, name=name, attempts=page, next_token=token)

    # --- rotation functions ---------------------------------------------------------------------------------

    async def register_function(
        self, *, name: str, endpoint: str, ca_pem: str, server_name: str | None
    ) -> FunctionRow:
        c = Checker()
        c.pattern("name", name, FUNCTION_NAME_RE)
        c.pattern("endpoint", endpoint, ENDPOINT_RE)
        c.length("caPem", ca_pem, max_len=65536)
        c.length("serverName", server_name, min_len=1, max_len=253)
        c.done()
        if ca_pem and "-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise errors.InvalidParameter(
                "CaPem must be the PEM text of a CA certificate (-----BEGIN CERTIFICATE-----), or empty to "
                "trust the deployment's own CA."
            )
        # The rotation service will connect there: the endpoint must pass the rotation target policy now
        # (the rotation service checks it again, resolved afresh, before every call).
        host, port = split_endpoint(endpoint)
        await self._targets.address(host, port)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            row = await tx.insert_function(
                name=name,
                arn=self.function_arn(name),
                endpoint=endpoint,
                ca_pem=ca_pem,
                server_name=server_name,
                now=now,
            )
        if row is None:
            raise errors.AlreadyExists(
                f"A rotation function named {name} is already registered; delete it first to change it."
            )
        log.info("rotation.function_registered", arn=row.arn, endpoint=endpoint)
        return row

    async def list_functions(self) -> list[FunctionRow]:
        return await self._repo.functions()

    async def delete_function(self, *, function_id: str) -> None:
        c = Checker()
        c.length("functionId", function_id, min_len=1, max_len=2048)
        c.done()
        row = await self._repo.function(name=function_id, arn=function_id)
        if row is None:
            raise errors.NotFound(f"Coffer can't find the rotation function {function_id}.")
        async with self._repo.transaction() as tx:
            users = await tx.function_users(row.arn)
            if users:
                shown = ", ".join(users[:5]) + (", ..." if len(users) > 5 else "")
                raise errors.InvalidRequest(
                    f"The rotation function {row.name} is still the rotator of {len(users)} secret(s) "
                    f"({shown}); point them at another rotator with RotateSecret first."
                )
            await tx.delete_function(row.name)
        log.info("rotation.function_deleted", arn=row.arn)

    # --- RotationControlService -----------------------------------------------------------------------------

    async def claim_due(self, *, limit: int) -> list[Job]:
        """Start attempts for secrets whose rotation window has opened, then return every attempt that needs
        a job now (new, or unfinished with no live lease and its next try due)."""
        limit = limit if limit > 0 else 100
        now = self._clock.now()
        for due in await self._repo.due_secrets(now, limit=limit):
            try:
                await self._start_scheduled(due, now=now)
            except errors.CofferError as exc:
                log.warning("rotation.schedule_start_failed", arn=due.arn, code=exc.code, error=exc.message)
        attempts = await self._repo.claimable_attempts(now, limit=limit)
        return [_job(a, try_number=a.tries + 1) for a in attempts]

    async def _start_scheduled(self, due: DueSecret, *, now: datetime) -> None:
        async with self._repo.transaction() as tx:
            locked = await tx.lock_by_arn(due.arn)
            if locked is None or locked.deleted or locked.is_replica:
                return
            config = await tx.rotation_config(locked.id)
            if not config.enabled or config.next_rotation is None or config.next_rotation > now:
                return
            sched = _schedule(config.rules)
            if sched is None:
                await tx.update_rotation(locked.id, {"next_rotation_at": None})
                return
            if sched.phase(config.next_rotation, now) == "missed":
                # The window closed unseen (nobody claimed in time): the next window that is still open.
                following = sched.next_window_after(now, base=config.next_rotation)
                await tx.update_rotation(locked.id, {"next_rotation_at": following})
                log.info("rotation.window_missed", arn=locked.arn, next_rotation=following.isoformat())
                if sched.phase(following, now) != "due":
                    return
            if config.rotator is None or _pending_elsewhere(locked) is not None:
                # A failed rotation still holds AWSPENDING (it must be cleaned up or cancelled first, as in
                # AWS): wait for the next window.
                following = sched.next_window_start(now)
                await tx.update_rotation(locked.id, {"next_rotation_at": following})
                log.info("rotation.window_skipped", arn=locked.arn, next_rotation=following.isoformat())
                return
            if await tx.open_attempt(locked.id) is not None:
                return
            token = str(uuid.uuid4())
            await self._start(
                tx,
                locked,
                token=token,
                rotator=config.rotator,
                rotate_immediately=True,
                trigger=Trigger.SCHEDULE,
                now=now,
            )
            await tx.record_change(
                locked.id,
                event="RotationScheduled",
                now=now,
                version_id=token,
                payload={"rotator": config.rotator},
            )
        log.info("rotation.scheduled_start", arn=locked.arn, token=token)

    def _check_worker(self, worker_id: str) -> None:
        c = Checker()
        c.length("workerId", worker_id, min_len=1, max_len=256)
        c.done()

    async def _attempt_for(self, tx: RotationTx, arn: str, token: str) -> AttemptRow:
        attempt = await tx.attempt(arn, token)
        if attempt is None:
            raise errors.NotFound(f"There is no rotation attempt {token} for secret {arn}.")
        return attempt

    async def acquire_lease(self, *, arn: str, token: str, worker_id: str, lease_seconds: int) -> Lease:
        self._check_worker(worker_id)
        seconds = machine.lease_seconds_for(lease_seconds, self._policy)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            attempt = await self._attempt_for(tx, arn, token)
            decision = machine.acquire(attempt.state, worker_id=worker_id, now=now, lease_seconds=seconds)
            if decision.state is None:
                return Lease(acquired=False, reason=decision.reason, job=None)
            await tx.save_attempt(attempt.id, decision.state)
        return Lease(acquired=True, reason="", job=_job(attempt, try_number=decision.state.tries))

    async def record_step(
        self, *, arn: str, token: str, worker_id: str, step: str, status: str, error: str | None
    ) -> None:
        self._check_worker(worker_id)
        c = Checker()
        c.enum("step", step, STEPS)
        c.enum("status", status, STEP_STATUSES)
        c.done()
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            attempt = await self._attempt_for(tx, arn, token)
            state = machine.step_recorded(attempt.state, token=token, worker_id=worker_id, now=now)
            await tx.record_step(
                attempt.id,
                try_number=attempt.tries,
                step=step,
                status=status,
                worker_id=worker_id,
                error=error[:MAX_ERROR] if error else None,
                now=now,
            )
            await tx.save_attempt(attempt.id, state)

    async def complete(self, *, arn: str, token: str, worker_id: str) -> None:
        self._check_worker(worker_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_by_arn(arn)
            if locked is None:
                raise errors.NotFound()
            attempt = await self._attempt_for(tx, arn, token)
            if attempt.status == machine.AttemptStatus.SUCCEEDED:
                return
            done = machine.succeed(attempt.state, token=token, worker_id=worker_id, now=now)
            if not attempt.rotate_immediately:
                await self._drop_test_copy(tx, locked, token)
                await tx.save_attempt(attempt.id, done)
                await tx.record_change(
                    locked.id, event="RotationTested", now=now, version_id=token, payload={}
                )
                log.info("rotation.tested", arn=arn, token=token)
                return
            if locked.labels.get(AWSCURRENT) != token:
                raise errors.InvalidRequest(
                    f"finishSecret has not moved AWSCURRENT to version {token}, so the rotation is not "
                    "complete."
                )
            old = dict(locked.labels)
            new = {label: vid for label, vid in old.items() if not (label == AWSPENDING and vid == token)}
            await tx.replace_labels(locked.id, old, new)
            config = await tx.rotation_config(locked.id)
            sched = _schedule(config.rules)
            changes: dict[str, Any] = {"last_rotated_at": now}
            if config.enabled:
                changes["next_rotation_at"] = sched.next_window_start(now) if sched is not None else None
            await tx.update_rotation(locked.id, changes)
            await tx.save_attempt(attempt.id, done)
            await tx.record_change(
                locked.id,
                event="RotationSucceeded",
                now=now,
                version_id=token,
                payload={"tries": attempt.tries},
            )
        log.info("rotation.completed", arn=arn, token=token, tries=attempt.tries)

    async def fail_try(self, *, arn: str, token: str, worker_id: str, error: str) -> FailOutcome:
        self._check_worker(worker_id)
        now = self._clock.now()
        async with self._repo.transaction() as tx:
            locked = await tx.lock_by_arn(arn)
            if locked is None:
                raise errors.NotFound()
            attempt = await self._attempt_for(tx, arn, token)
            decision = machine.fail_try(
                attempt.state, token=token, worker_id=worker_id, error=error, now=now, policy=self._policy
            )
            await tx.save_attempt(attempt.id, decision.state)
            if decision.final:
                if not attempt.rotate_immediately:
                    await self._drop_test_copy(tx, locked, token)
                await tx.record_change(
                    locked.id,
                    event="RotationFailed",
                    now=now,
                    version_id=token,
                    payload={"tries": attempt.tries},
                )
        if decision.final:
            log.warning(
                "rotation.failed", arn=arn, token=token, tries=attempt.tries, error=decision.state.error
            )
            return FailOutcome(final=True, next_try_seconds=0)
        delay = decision.delay_seconds
        log.info("rotation.try_failed", arn=arn, token=token, tries=attempt.tries, retry_in=delay)
        return FailOutcome(final=False, next_try_seconds=math.ceil(delay))
