"""SQL of the change stream (WatchSecrets): reading ``store.secret_events`` after a position, the state that
says which positions still resume, the facts authorization needs of the secrets named by a batch of events,
and the housekeeping trim. Rows are written by ``store.append_secret_event`` inside each write (see
``record_change`` and migration 0009)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coffer.core.secret_keys import SecretFacts
from coffer.store.sql.common import Reads, Statements
from coffer.store.sql.secrets import FACTS_COLUMNS, facts_of


@dataclass(frozen=True, slots=True)
class EventRow:
    position: int
    account: str
    arn: str
    name: str
    kind: str
    version_id: str | None
    version_stages: tuple[str, ...]
    detail: str | None
    event_time: datetime


@dataclass(frozen=True, slots=True)
class EventPage:
    epoch: int
    #: Positions at or after this resume; before it, events were trimmed.
    trimmed_through: int
    events: tuple[EventRow, ...]


@dataclass(frozen=True, slots=True)
class WatchTrim:
    deleted: int
    trimmed_through: int


_STATE_SQL = "SELECT epoch, trimmed_through FROM store.secret_events_state"
_HEAD_SQL = (
    "SELECT st.epoch, GREATEST(st.trimmed_through,"
    " COALESCE((SELECT max(position) FROM store.secret_events), 0)) AS head FROM store.secret_events_state st"
)
_PAGE_SQL = (
    "SELECT position, account_id, arn, name, kind, version_id, version_stages, detail, event_time"
    " FROM store.secret_events WHERE position > $1 ORDER BY position LIMIT $2"
)


class WatchStatements(Statements):
    async def record_event(
        self, secret_id: int, *, kind: str, version_id: str | None, detail: str | None, now: datetime
    ) -> None:
        """A change stream event of its own (a change that does not go through ``record_change``: a replica
        region applying its primary's change)."""
        await self._conn.execute(
            "SELECT store.append_secret_event(s.id, s.account_id, s.arn, s.name, $2, $3, $4, $5)"
            " FROM store.secrets s WHERE s.id = $1",
            secret_id,
            kind,
            version_id,
            detail,
            now,
        )


class WatchReads(Reads):
    async def watch_head(self) -> tuple[int, int]:
        """(epoch, the position of the newest event committed): a new stream starts after it."""
        row = await self._pool.fetchrow(_HEAD_SQL)
        assert row is not None
        return int(row["epoch"]), int(row["head"])

    async def events_after(self, position: int, *, limit: int) -> EventPage:
        """The events after ``position``, oldest first, with the state they must be checked against, read in
        one snapshot (a trim that commits meanwhile cannot slip between the check and the read)."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            state = await conn.fetchrow(_STATE_SQL)
            rows = await conn.fetch(_PAGE_SQL, position, limit)
        assert state is not None
        return EventPage(
            epoch=int(state["epoch"]),
            trimmed_through=int(state["trimmed_through"]),
            events=tuple(
                EventRow(
                    position=r["position"],
                    account=r["account_id"],
                    arn=r["arn"],
                    name=r["name"],
                    kind=r["kind"],
                    version_id=r["version_id"],
                    version_stages=tuple(r["version_stages"]),
                    detail=r["detail"],
                    event_time=r["event_time"],
                )
                for r in rows
            ),
        )

    async def facts_by_arn(self, arns: Sequence[str]) -> dict[str, SecretFacts]:
        """Authorization's view of the secrets that still exist among ``arns`` (one round trip)."""
        rows = await self._pool.fetch(
            f"SELECT s.arn, s.name, {FACTS_COLUMNS} FROM store.secrets s WHERE s.arn = ANY($1::text[])",
            list(arns),
        )
        return {r["arn"]: facts_of(r) for r in rows}

    async def trim_events(self, *, keep_seconds: float, max_rows: int) -> WatchTrim:
        """Delete the events committed more than ``keep_seconds`` ago (wall clock) and every event beyond
        the newest ``max_rows``; tokens at or before the last deleted position are refused from now on."""
        async with self._pool.acquire() as conn, conn.transaction():
            cut = await conn.fetchval(
                "SELECT GREATEST("
                " (SELECT max(position) FROM store.secret_events"
                "  WHERE committed_at < clock_timestamp() - make_interval(secs => $1)),"
                " (SELECT position FROM store.secret_events ORDER BY position DESC OFFSET $2 LIMIT 1))",
                keep_seconds,
                max_rows,
            )
            if cut is None:
                state = await conn.fetchval("SELECT trimmed_through FROM store.secret_events_state")
                return WatchTrim(deleted=0, trimmed_through=int(state))
            # The state first: a reader holding an older snapshot still sees the rows it checks against.
            through = await conn.fetchval(
                "UPDATE store.secret_events_state SET trimmed_through = GREATEST(trimmed_through, $1)"
                " RETURNING trimmed_through",
                cut,
            )
            status: str = await conn.execute("DELETE FROM store.secret_events WHERE position <= $1", cut)
        return WatchTrim(deleted=int(status.split()[-1]), trimmed_through=int(through))
