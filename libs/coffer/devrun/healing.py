"""The ``make run`` supervisor heals: a service that exits is restarted with back-off instead of taking the
whole deployment down; only a crash loop stops it.

:class:`RestartPolicy` and :class:`RestartTracker` are the pure part (time comes from a
:class:`~coffer.clock.Clock`): each exit of a service is recorded; the restart waits ``initial_delay``
seconds, doubling with every further exit within ``window`` seconds up to ``max_delay``; the
``max_exits``-th exit within ``window`` seconds is a crash loop. :class:`Healer` applies them to one
:class:`~coffer.devrun.Deployment`: it is stepped by the supervisor's main loop, restarts in start order (a
service waits until every service of an earlier wave is up) and counts a restarted service as up only once
it answers SERVING. It keeps a JSON state file (``$COFFER_HOME/run/supervisor.json``, 0600, written
atomically) with each service's restarts, which ``coffer status`` shows.

Blocking code (subprocesses, health checks): it never runs inside an event loop.
"""

from __future__ import annotations

import json
import signal
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from coffer.clock import Clock, SystemClock
from coffer.devrun.config import service_of
from coffer.devrun.processes import (
    STATE_FILE_NAME,
    DeploymentError,
    ServiceProcess,
    check_health,
    health_tls,
    write_private,
)

if TYPE_CHECKING:
    from coffer.devrun.deployment import Deployment

#: The settings of the restart policy (read by the supervisor only; no service is given them).
EXITS_ENV = "COFFER_DEVRUN_CRASH_LOOP_EXITS"
WINDOW_ENV = "COFFER_DEVRUN_CRASH_LOOP_SECONDS"
INITIAL_DELAY_ENV = "COFFER_DEVRUN_RESTART_DELAY_SECONDS"
MAX_DELAY_ENV = "COFFER_DEVRUN_RESTART_MAX_DELAY_SECONDS"


class CrashLoop(DeploymentError):
    """A service exited too often within the window: the deployment stops (the message says which)."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_delay: float = 0.5
    max_delay: float = 10.0
    max_exits: int = 5
    window: float = 60.0

    def __post_init__(self) -> None:
        if self.max_exits < 1:
            raise ValueError(f"{EXITS_ENV} must be at least 1, got {self.max_exits}")
        if self.window <= 0 or self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError(
                f"restart policy: need {WINDOW_ENV} > 0 and 0 <= {INITIAL_DELAY_ENV} <= {MAX_DELAY_ENV}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RestartPolicy:
        """The policy from ``COFFER_DEVRUN_*`` variables (defaults: 0.5 s doubling to 10 s; five exits
        within 60 s are a crash loop); a malformed value is a ``ValueError`` naming the variable."""
        defaults = cls()

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None

        exits = number(EXITS_ENV, defaults.max_exits)
        if exits != int(exits):
            raise ValueError(f"{EXITS_ENV} must be a whole number, got {exits}")
        return cls(
            initial_delay=number(INITIAL_DELAY_ENV, defaults.initial_delay),
            max_delay=number(MAX_DELAY_ENV, defaults.max_delay),
            max_exits=int(exits),
            window=number(WINDOW_ENV, defaults.window),
        )

    def delay_after(self, exits_in_window: int) -> float:
        """Seconds to wait before restarting after the ``exits_in_window``-th exit within the window."""
        return min(self.initial_delay * 2.0 ** max(exits_in_window - 1, 0), self.max_delay)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do after an exit: restart after ``delay`` seconds, or stop (``crash_loop``)."""

    crash_loop: bool
    delay: float
    exits_in_window: int


@dataclass
class RestartTracker:
    """The exits of one service and what each one means under ``policy``."""

    policy: RestartPolicy
    clock: Clock
    _exits: deque[datetime] = field(default_factory=deque)

    def record_exit(self) -> Verdict:
        now = self.clock.now()
        self._exits.append(now)
        horizon = now - timedelta(seconds=self.policy.window)
        while self._exits and self._exits[0] <= horizon:
            self._exits.popleft()
        count = len(self._exits)
        if count >= self.policy.max_exits:
            return Verdict(crash_loop=True, delay=0.0, exits_in_window=count)
        return Verdict(crash_loop=False, delay=self.policy.delay_after(count), exits_in_window=count)


# -------------------------------------------------------------------------------------------------- healer

State = Literal["up", "waiting", "starting"]


@dataclass
class _Service:
    tracker: RestartTracker
    state: State = "up"
    restarts: int = 0
    due: datetime | None = None  # waiting: when to restart; starting: when to give up waiting for SERVING
    last_exit_code: int | None = None


def state_file(home: Path) -> Path:
    return home / "run" / STATE_FILE_NAME


class Healer:
    """Watches the services of one running deployment (after ``start()``) and restarts those that exit.

    ``step()`` is called by the supervisor's loop (never while stopping): it notices exits, restarts what is
    due in start order, and raises :class:`CrashLoop` when a service exits ``max_exits`` times within the
    window. ``label`` names the deployment in the crash-loop message (the region, under ``REGIONS=2``)."""

    def __init__(
        self,
        deployment: Deployment,
        policy: RestartPolicy,
        *,
        clock: Clock | None = None,
        label: str = "",
        health_check: Callable[[str], str] | None = None,
    ) -> None:
        self.deployment = deployment
        self.policy = policy
        self.clock = clock or SystemClock()
        self.label = label
        self._health_check = health_check or self._check_health
        self.services = {name: _Service(RestartTracker(policy, self.clock)) for name in deployment.instances}
        self.write_state()

    @property
    def path(self) -> Path:
        return state_file(self.deployment.home)

    def restarts(self) -> dict[str, int]:
        return {name: svc.restarts for name, svc in self.services.items()}

    def step(self) -> None:
        for wave_index, wave in enumerate(self.deployment.waves):
            for name in wave:
                svc = self.services[name]
                if svc.state == "up":
                    self._watch_up(name, svc)
                elif svc.state == "starting":
                    self._watch_starting(name, svc)
                elif svc.state == "waiting" and self._earlier_waves_up(wave_index):
                    self._restart_if_due(name, svc)

    def close(self) -> None:
        """The deployment has stopped: its state file goes."""
        self.path.unlink(missing_ok=True)

    # ---- internals
    def _earlier_waves_up(self, wave_index: int) -> bool:
        waves = self.deployment.waves[:wave_index]
        return all(self.services[n].state == "up" for wave in waves for n in wave)

    def _watch_up(self, name: str, svc: _Service) -> None:
        sp = self.deployment.processes.get(name)
        if sp is None:
            return
        code = sp.proc.poll()
        if code is not None:
            self._exited(name, svc, sp, code, f"{name} exited unexpectedly with code {code}.")

    def _watch_starting(self, name: str, svc: _Service) -> None:
        sp = self.deployment.processes[name]
        code = sp.proc.poll()
        if code is not None:
            self._exited(name, svc, sp, code, f"{name} exited with code {code} while restarting.")
            return
        status = self._health_check(name)
        if status == "SERVING":
            svc.state, svc.due = "up", None
            self.deployment.echo(
                f"{name:<9} SERVING again on {self.deployment.instance_addr(name)} (restart {svc.restarts})"
            )
            self.write_state()
        elif svc.due is not None and self.clock.now() >= svc.due:
            sp.signal(signal.SIGKILL)
            code = sp.reap(self.deployment.stop_timeout)
            self._exited(
                name,
                svc,
                sp,
                code,
                f"{name} did not report SERVING within {self.deployment.health_timeout:.0f}s of its "
                f"restart (last answer: {status}); killed it.",
            )

    def _restart_if_due(self, name: str, svc: _Service) -> None:
        if svc.due is not None and self.clock.now() < svc.due:
            return
        svc.restarts += 1
        svc.state = "starting"
        svc.due = self.clock.now() + timedelta(seconds=self.deployment.health_timeout)
        self.deployment.echo(f"{name:<9} restarting (restart {svc.restarts})")
        self.deployment._spawn(name)
        self.write_state()

    def _exited(self, name: str, svc: _Service, sp: ServiceProcess, code: int, what: str) -> None:
        sp.reap(self.deployment.stop_timeout)  # already exited: reaps it and removes its pid file
        self.deployment.processes.pop(name, None)
        svc.last_exit_code = code
        verdict = svc.tracker.record_exit()
        tail = sp.log_tail()
        self.deployment.echo(f"{what}\n{tail}")
        if verdict.crash_loop:
            svc.state = "waiting"
            svc.due = None
            self.write_state()
            where = f" (region {self.label})" if self.label else ""
            times = "once" if verdict.exits_in_window == 1 else f"{verdict.exits_in_window} times"
            raise CrashLoop(
                f"{name}{where} is in a crash loop: it exited {times} within "
                f"{self.policy.window:g}s, the last time with code {code}; stopping the deployment.\n{tail}"
            )
        svc.state = "waiting"
        svc.due = self.clock.now() + timedelta(seconds=verdict.delay)
        self.deployment.echo(
            f"{name:<9} will be restarted in {verdict.delay:g}s (exit {verdict.exits_in_window} within "
            f"{self.policy.window:g}s; {self.policy.max_exits} stop the deployment)"
        )
        self.write_state()

    def _check_health(self, name: str) -> str:
        d = self.deployment
        service = service_of(name)
        return check_health(
            d.instance_addr(name),
            tls=health_tls(d.settings.pki_dir, service),
            service=service,
            timeout=0.5,
        )

    def write_state(self) -> None:
        doc = {
            "region": self.deployment.settings.region,
            "services": {
                name: {"state": svc.state, "restarts": svc.restarts, "last_exit_code": svc.last_exit_code}
                for name, svc in self.services.items()
            },
        }
        write_private(self.path, json.dumps(doc, indent=2) + "\n")
