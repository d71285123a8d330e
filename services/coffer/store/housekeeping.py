"""The store's housekeeping loop: trims the outbox (rows every peer region acknowledged; beyond a cap, the
oldest rows whoever has not acknowledged them, re-seeding the replicas that missed some) and the rotation
attempt history (the newest N finished attempts per secret are kept), the change stream's events (by age and
count) and deletes role sessions that expired
more than an hour ago (``SESSION_GRACE``). The rules are in ``coffer.store.sql.housekeeping``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from coffer.clock import Clock
from coffer.loops import run_forever
from coffer.store.repository import StoreRepository
from coffer.store.sql.housekeeping import OutboxTrim

log = structlog.get_logger("coffer.store.housekeeping")

#: How long after it expired a role session's row is kept (a refused call names it as expired meanwhile).
SESSION_GRACE = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class HousekeepingResult:
    outbox: OutboxTrim
    attempts: int
    reseeded: int
    sessions: int = 0
    #: Change stream events trimmed (older or beyond the cap).
    watch_events: int = 0


class Housekeeper:
    def __init__(
        self,
        repo: StoreRepository,
        clock: Clock,
        *,
        peers: Sequence[str],
        outbox_max_rows: int,
        outbox_keep_seconds: float,
        attempts_kept: int,
        watch_keep_seconds: float = 86_400.0,
        watch_max_events: int = 1_000_000,
    ) -> None:
        self._repo = repo
        self._clock = clock
        self._peers = tuple(peers)
        self._max_rows = outbox_max_rows
        self._keep = outbox_keep_seconds
        self._attempts_kept = attempts_kept
        self._watch_keep = watch_keep_seconds
        self._watch_max = watch_max_events

    async def run_once(self) -> HousekeepingResult:
        trim = await self._repo.trim_outbox(self._peers, max_rows=self._max_rows, keep_seconds=self._keep)
        for arn, region in trim.lost_removals:
            log.warning("housekeeping.removal_not_shipped", arn=arn, region=region)
        reseeded = await self._reseed(trim.resync)
        attempts = await self._repo.trim_attempts(keep=self._attempts_kept)
        sessions = await self._repo.delete_expired_sessions(expired_before=self._clock.now() - SESSION_GRACE)
        watch = await self._repo.trim_events(keep_seconds=self._watch_keep, max_rows=self._watch_max)
        if trim.acknowledged or trim.capped or attempts or sessions or watch.deleted:
            log.info(
                "housekeeping.trimmed",
                outbox_acknowledged=trim.acknowledged,
                outbox_capped=trim.capped,
                lagging=list(trim.lagging),
                reseeded=reseeded,
                attempts=attempts,
                sessions=sessions,
                watch_events=watch.deleted,
            )
        return HousekeepingResult(
            outbox=trim, attempts=attempts, reseeded=reseeded, sessions=sessions, watch_events=watch.deleted
        )

    async def _reseed(self, resync: Sequence[tuple[int, str, str]]) -> int:
        """A new change per secret, shipped as a seed (every version, full metadata) to the given regions."""
        by_secret: dict[str, list[str]] = {}
        for _, arn, region in resync:
            by_secret.setdefault(arn, []).append(region)
        done = 0
        for arn, regions in by_secret.items():
            async with self._repo.transaction() as tx:
                locked = await tx.lock_by_arn(arn)
                if locked is None:
                    continue
                since = await tx.change_seq(locked.id) + 1
                again = await tx.reseed_replicas(locked.id, regions, since_seq=since)
                if not again:
                    continue
                await tx.record_change(
                    locked.id, event="ResyncReplica", now=self._clock.now(), payload={"regions": again}
                )
            done += len(again)
        return done

    async def run(self, interval: float) -> None:
        async def once() -> None:
            await self.run_once()

        await run_forever(once, name="store.housekeeping", interval=interval, logger=log)
