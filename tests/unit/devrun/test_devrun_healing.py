"""The ``make run`` supervisor heals: the restart policy (back-off, crash loop) on a clock moved by hand, the
healer's decisions on fake processes, and ``coffer status`` reading the supervisor's restarts."""

from __future__ import annotations

import io
import json
import stat
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from coffer.cli.main import main
from coffer.cli.status import read_restarts, supervisor_restarts
from coffer.client.credentials import Credentials
from coffer.devrun import MultiRegion, region_envs
from coffer.devrun.config import instance_waves
from coffer.devrun.healing import (
    CrashLoop,
    Healer,
    RestartPolicy,
    RestartTracker,
    Verdict,
    state_file,
)
from coffer.devrun.processes import STATE_FILE_NAME, stop_leftovers
from coffer.settings import SERVICES
from coffer.testing.clock import ManualClock


def tracker(**policy: Any) -> tuple[RestartTracker, ManualClock]:
    clock = ManualClock()
    return RestartTracker(RestartPolicy(**policy), clock), clock


def test_back_off_doubles_from_half_a_second_up_to_ten() -> None:
    policy = RestartPolicy(max_exits=100)
    assert [policy.delay_after(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_the_fifth_exit_within_a_minute_is_a_crash_loop() -> None:
    t, clock = tracker()
    verdicts = []
    for _ in range(4):
        verdicts.append(t.record_exit())
        clock.advance(timedelta(seconds=10))
    assert [v.crash_loop for v in verdicts] == [False] * 4
    assert [v.delay for v in verdicts] == [0.5, 1.0, 2.0, 4.0]
    fifth = t.record_exit()
    assert fifth.crash_loop and fifth.exits_in_window == 5


def test_exits_older_than_the_window_are_forgotten() -> None:
    t, clock = tracker()
    for _ in range(4):
        t.record_exit()
        clock.advance(timedelta(seconds=14))
    clock.advance(timedelta(seconds=5))  # the first exit is now 61 s old
    verdict = t.record_exit()
    assert not verdict.crash_loop
    assert verdict.exits_in_window == 4
    clock.advance(timedelta(minutes=5))
    assert t.record_exit() == Verdict(crash_loop=False, delay=0.5, exits_in_window=1)


def test_one_allowed_exit_makes_every_exit_fatal() -> None:
    t, _ = tracker(max_exits=1)
    assert t.record_exit().crash_loop


def test_policy_from_env() -> None:
    assert RestartPolicy.from_env({}) == RestartPolicy(0.5, 10.0, 5, 60.0)
    policy = RestartPolicy.from_env(
        {
            "COFFER_DEVRUN_CRASH_LOOP_EXITS": "3",
            "COFFER_DEVRUN_CRASH_LOOP_SECONDS": "30",
            "COFFER_DEVRUN_RESTART_DELAY_SECONDS": "0.1",
            "COFFER_DEVRUN_RESTART_MAX_DELAY_SECONDS": "2",
        }
    )
    assert policy == RestartPolicy(0.1, 2.0, 3, 30.0)
    for bad in ({"COFFER_DEVRUN_CRASH_LOOP_EXITS": "many"}, {"COFFER_DEVRUN_CRASH_LOOP_EXITS": "0"}):
        with pytest.raises(ValueError, match="COFFER_DEVRUN_CRASH_LOOP_EXITS"):
            RestartPolicy.from_env(bad)
    with pytest.raises(ValueError):
        RestartPolicy.from_env({"COFFER_DEVRUN_RESTART_MAX_DELAY_SECONDS": "0.1"})


# ------------------------------------------------------------------------------------- the healer, faked


class FakeProc:
    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


@dataclass
class FakeProcess:
    name: str
    proc: FakeProc = field(default_factory=FakeProc)
    reaped: bool = False

    def reap(self, _timeout: float) -> int:
        self.reaped = True
        assert self.proc.returncode is not None
        return self.proc.returncode

    def signal(self, _sig: int) -> None:
        self.proc.returncode = -9

    def log_tail(self) -> str:
        return f"--- {self.name}.log\nlast words of {self.name}"


@dataclass
class FakeSettings:
    region: str = "local-1"

    def addr_of(self, name: str) -> str:
        return f"127.0.0.1:{name}"


@dataclass
class FakeDeployment:
    home: Path
    settings: FakeSettings = field(default_factory=FakeSettings)
    stop_timeout: float = 1.0
    health_timeout: float = 30.0
    lines: list[str] = field(default_factory=list)
    spawned: list[str] = field(default_factory=list)
    processes: dict[str, FakeProcess] = field(default_factory=dict)
    replicas: int = 1

    def __post_init__(self) -> None:
        for name in self.instances:
            self.processes[name] = FakeProcess(name)

    @property
    def waves(self) -> tuple[tuple[str, ...], ...]:
        return instance_waves(self.replicas)

    @property
    def instances(self) -> list[str]:
        return [name for wave in self.waves for name in wave]

    def instance_addr(self, name: str) -> str:
        return f"127.0.0.1:{name}"

    def echo(self, line: str) -> None:
        self.lines.append(line)

    def _spawn(self, name: str) -> None:
        self.spawned.append(name)
        self.processes[name] = FakeProcess(name)


def healer_on(
    tmp_path: Path, replicas: int = 1, **policy: Any
) -> tuple[Healer, FakeDeployment, ManualClock, dict[str, str]]:
    (tmp_path / "run").mkdir()
    deployment = FakeDeployment(tmp_path, replicas=replicas)
    clock = ManualClock()
    health: dict[str, str] = {}
    healer = Healer(
        deployment,  # type: ignore[arg-type]
        RestartPolicy(**policy),
        clock=clock,
        health_check=lambda name: health.get(name, "UNAVAILABLE: starting"),
    )
    return healer, deployment, clock, health


def restarts_on_disk(home: Path) -> dict[str, int] | None:
    return read_restarts(state_file(home))


def test_a_dead_service_is_restarted_after_the_back_off_and_counted_once_serving(tmp_path: Path) -> None:
    healer, deployment, clock, health = healer_on(tmp_path)
    assert restarts_on_disk(tmp_path) == {"kms": 0, "store": 0, "gateway": 0, "rotation": 0}
    assert stat.S_IMODE(state_file(tmp_path).stat().st_mode) == 0o600
    old = deployment.processes["rotation"]
    old.proc.returncode = -9

    healer.step()
    assert old.reaped and "rotation" not in deployment.processes
    assert "rotation exited unexpectedly with code -9.\n--- rotation.log\nlast words of rotation" in (
        deployment.lines
    )
    assert any("will be restarted in 0.5s" in line for line in deployment.lines)
    healer.step()
    assert deployment.spawned == []  # not before the back-off
    clock.advance(timedelta(seconds=0.5))
    healer.step()
    assert deployment.spawned == ["rotation"]
    assert restarts_on_disk(tmp_path) == {"kms": 0, "store": 0, "gateway": 0, "rotation": 1}
    assert json.loads(state_file(tmp_path).read_text())["services"]["rotation"]["state"] == "starting"
    healer.step()
    assert healer.services["rotation"].state == "starting"  # not SERVING yet
    health["rotation"] = "SERVING"
    healer.step()
    assert json.loads(state_file(tmp_path).read_text())["services"]["rotation"]["state"] == "up"
    assert any("rotation  SERVING again" in line for line in deployment.lines)
    healer.close()
    assert not state_file(tmp_path).exists()


def test_one_dead_replica_is_restarted_while_the_other_keeps_running(tmp_path: Path) -> None:
    healer, deployment, clock, health = healer_on(tmp_path, replicas=2)
    assert deployment.instances == [
        "kms", "kms-2", "store", "store-2", "gateway", "gateway-2", "rotation", "rotation-2"
    ]  # fmt: skip
    deployment.processes["store-2"].proc.returncode = -9
    healer.step()
    assert "store-2 exited unexpectedly with code -9." in "\n".join(deployment.lines)
    assert "store-2" not in deployment.processes and "store" in deployment.processes
    clock.advance(timedelta(seconds=0.5))
    healer.step()
    assert deployment.spawned == ["store-2"]
    health["store-2"] = "SERVING"
    healer.step()
    assert restarts_on_disk(tmp_path) == {name: int(name == "store-2") for name in deployment.instances}


def test_restarts_keep_the_start_order(tmp_path: Path) -> None:
    healer, deployment, clock, health = healer_on(tmp_path)
    deployment.processes["rotation"].proc.returncode = 1
    deployment.processes["kms"].proc.returncode = 1
    healer.step()
    clock.advance(timedelta(seconds=1))
    healer.step()
    assert deployment.spawned == ["kms"]  # rotation waits until kms is SERVING again
    healer.step()
    assert deployment.spawned == ["kms"]
    health["kms"] = "SERVING"
    healer.step()
    assert deployment.spawned == ["kms", "rotation"]


def test_a_crash_loop_stops_with_the_service_its_exit_code_and_log(tmp_path: Path) -> None:
    healer, deployment, clock, _ = healer_on(tmp_path, max_exits=3)
    for _ in range(2):
        deployment.processes["store"].proc.returncode = 1
        healer.step()
        clock.advance(timedelta(seconds=5))
        healer.step()  # restarted; it exits again while starting
    deployment.processes["store"].proc.returncode = 3
    with pytest.raises(CrashLoop) as caught:
        healer.step()
    message = str(caught.value)
    assert message.startswith("store is in a crash loop: it exited 3 times within 60s")
    assert "the last time with code 3" in message and "last words of store" in message
    assert restarts_on_disk(tmp_path) == {"kms": 0, "store": 2, "gateway": 0, "rotation": 0}


def test_a_restart_that_never_serves_is_killed_and_counted_as_an_exit(tmp_path: Path) -> None:
    healer, deployment, clock, _ = healer_on(tmp_path)
    deployment.processes["gateway"].proc.returncode = 1
    healer.step()
    clock.advance(timedelta(seconds=1))
    healer.step()
    clock.advance(timedelta(seconds=31))
    healer.step()
    assert any("gateway did not report SERVING within 30s" in line for line in deployment.lines)
    assert healer.services["gateway"].tracker.record_exit().exits_in_window == 3


# ------------------------------------------------------------------------------------ coffer status side


def test_status_reads_the_restarts_the_profile_points_at(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    doc = {"services": {"kms": {"restarts": 0}, "rotation": {"restarts": 2}}}
    (run / STATE_FILE_NAME).write_text(json.dumps(doc))
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"region": "local-1", "supervisor_state": f"run/{STATE_FILE_NAME}"}))
    assert supervisor_restarts(profile, "local-1") == {"kms": 0, "rotation": 2}
    assert supervisor_restarts(profile, "local-9") is None
    assert supervisor_restarts(None, None) is None

    other = tmp_path / "r2"
    (other / "run").mkdir(parents=True)
    (other / "run" / STATE_FILE_NAME).write_text(json.dumps({"services": {"store": {"restarts": 1}}}))
    profile.write_text(
        json.dumps(
            {
                "region": "local-1",
                "supervisor_state": str(run / STATE_FILE_NAME),
                "regions": {
                    "local-1": {"supervisor_state": str(run / STATE_FILE_NAME)},
                    "local-2": {"supervisor_state": str(other / "run" / STATE_FILE_NAME)},
                },
            }
        )
    )
    assert supervisor_restarts(profile, "local-2") == {"store": 1}
    (run / STATE_FILE_NAME).unlink()
    assert supervisor_restarts(profile, "local-1") is None  # the supervisor has stopped
    (run / STATE_FILE_NAME).write_text("not json")
    assert supervisor_restarts(profile, "local-1") is None


def test_each_region_keeps_its_own_restarts_and_status_shows_them(tmp_path: Path) -> None:
    multi = MultiRegion.from_envs(region_envs({"COFFER_HOME": str(tmp_path / "c")}, 2), echo=lambda _: None)
    healers = []
    for deployment in multi.deployments:
        deployment.admin_credentials = Credentials("AKIAXXXXXXXXXXXXXXXX", "secret")
        (deployment.home / "run").mkdir(parents=True)
        healers.append(Healer(deployment, RestartPolicy(), label=deployment.settings.region))
    multi.write_profile()
    healers[1].services["store"].restarts = 2
    healers[1].write_state()

    assert supervisor_restarts(multi.profile_path, "local-1") == dict.fromkeys(SERVICES, 0)
    assert supervisor_restarts(multi.profile_path, "local-2") == {**dict.fromkeys(SERVICES, 0), "store": 2}
    out, err = io.StringIO(), io.StringIO()
    code = main(["status", "--profile", str(multi.profile_path), "--timeout", "0.2"], stdout=out, stderr=err)
    assert code != 0  # nothing listens: every service UNREACHABLE, each with its restarts
    lines = out.getvalue().splitlines()
    assert len(lines) == 8
    store2 = next(line for line in lines if line.startswith("local-2") and " store " in line)
    assert "UNREACHABLE  restarts 2" in store2
    assert all("restarts 0" in line for line in lines if line != store2)


def test_a_killed_supervisors_state_file_is_cleared_with_its_leftovers(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / STATE_FILE_NAME).write_text(json.dumps({"services": {"kms": {"restarts": 3}}}))
    stop_leftovers(tmp_path, echo=lambda _: None, timeout=0.1)
    assert not (tmp_path / "run" / STATE_FILE_NAME).exists()
