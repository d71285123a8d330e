"""The real ``make run`` supervisor heals: a SIGKILLed rotation service is restarted within seconds (``coffer
status`` is healthy again and shows the restart), a rotation in flight when it was killed completes after the
restart, and a service that fails at every restart (its port taken by another program) is a crash loop that
stops the deployment with a message naming it, its last exit code and its log."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coffer.client.credentials import Credentials
from coffer.client.sync import CofferClient
from coffer.devrun.processes import port_free
from coffer.embedded import free_port
from coffer.settings import SERVICES
from coffer.testing.wait import eventually_sync
from tests.e2e.test_e2e_rotation_crash import FunctionThread, wait_attempt
from tests.e2e.test_e2e_supervisor import Supervisor, running

pytestmark = pytest.mark.e2e


def pid_of(home: Path, service: str) -> int | None:
    try:
        return int((home / "run" / f"{service}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def status_lines(e2e_tools: Any, profile: Path) -> dict[str, str]:
    result = e2e_tools.cli(profile, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}


def kill_and_wait_back(supervisor: Supervisor, home: Path, service: str, within: float = 10.0) -> float:
    """SIGKILL ``service``; wait until the supervisor says it is SERVING again; the seconds that took."""
    pid = pid_of(home, service)
    assert pid is not None
    before = supervisor.output().count(f"{service:<9} SERVING again")
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    eventually_sync(
        lambda: supervisor.output().count(f"{service:<9} SERVING again") > before,
        timeout=within,
        interval=0.1,
        message=f"{service} to be SERVING again after SIGKILL:\n{supervisor.output()}",
    )
    took = time.monotonic() - started
    new_pid = pid_of(home, service)
    assert new_pid is not None and new_pid != pid and running(new_pid)
    return took


def test_a_killed_rotation_service_is_back_within_ten_seconds(e2e_tools: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    profile = home / "profile.json"
    supervisor = Supervisor(env, tmp_path / "out")
    try:
        supervisor.wait_running()
        before = status_lines(e2e_tools, profile)
        assert all(before[svc].endswith("SERVING  restarts 0") for svc in SERVICES), before

        took = kill_and_wait_back(supervisor, home, "rotation")

        assert took < 10.0
        after = status_lines(e2e_tools, profile)
        assert after["rotation"].endswith("SERVING  restarts 1"), after
        assert all(after[svc].endswith("SERVING  restarts 0") for svc in ("kms", "store", "gateway")), after
        output = supervisor.output()
        assert f"rotation exited unexpectedly with code {-signal.SIGKILL}." in output
        assert f"--- {home / 'logs' / 'rotation.log'}" in output  # its log tail is shown
        assert "rotation  will be restarted in 0.5s" in output
        name = f"e2e-heal-{uuid.uuid4().hex[:8]}"
        created = e2e_tools.cli(
            profile, "secretsmanager", "create-secret", "--name", name, "--secret-string", "x"
        )
        assert created.returncode == 0, created.stderr
    finally:
        rc = supervisor.terminate()
    output = supervisor.output()
    assert rc == 0, output
    for svc in SERVICES:
        assert f"{svc:<9} stopped (exit 0)" in output, output
    assert "restarting" not in output.split("SIGTERM received")[1]  # nothing restarted while stopping
    assert not (home / "run" / "supervisor.json").exists()


def take_port_once_free(home: Path, service: str, port: int, within: float = 20.0) -> socket.socket:
    """SIGKILL ``service`` and listen on its port before the supervisor restarts it (killing a restart that
    won the race, until the port is ours)."""
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT connections do not matter
    deadline = time.monotonic() + within
    killed: set[int] = set()
    while time.monotonic() < deadline:
        pid = pid_of(home, service)
        if pid is not None and pid not in killed and running(pid):
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        try:
            squatter.bind(("127.0.0.1", port))
        except OSError:
            time.sleep(0.005)
            continue
        squatter.listen()
        return squatter
    squatter.close()
    pytest.fail(f"could not take {service}'s port {port}")


def test_a_service_that_fails_at_every_restart_stops_the_deployment(e2e_tools: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    env["COFFER_DEVRUN_RESTART_DELAY_SECONDS"] = "0.1"  # 0.1, 0.2, 0.4, 0.8 s: the loop in 1.5 s, not 7.5
    port = int(env["COFFER_ROTATION_ADDR"].rpartition(":")[2])
    supervisor = Supervisor(env, tmp_path / "out")
    squatter: socket.socket | None = None
    try:
        supervisor.wait_running()
        pids = {svc: pid_of(home, svc) for svc in ("kms", "store", "gateway")}
        squatter = take_port_once_free(home, "rotation", port)  # every restart now fails to bind
        rc = supervisor.proc.wait(timeout=120)
    finally:
        if squatter is not None:
            squatter.close()
        if supervisor.proc.poll() is None:
            supervisor.terminate()
    output = supervisor.output()
    assert rc == 1, output
    message = re.search(
        r"coffer: rotation is in a crash loop: it exited 5 times within 60s, "
        r"the last time with code (-?\d+); stopping the deployment\.",
        output,
    )
    assert message is not None, output
    assert message.group(1) == "1"  # the last restart could not bind its port
    assert "Failed to bind" in output.split("coffer: rotation is in a crash loop")[1]  # with its log tail
    assert output.count("rotation  restarting (restart") >= 4
    for svc in ("kms", "store", "gateway"):
        assert f"{svc:<9} stopped (exit 0)" in output, output
        pid = pids[svc]
        assert pid is not None and not running(pid)


@dataclass(frozen=True)
class FromProfile:
    """What the test's rotation function needs of the deployment (it runs in this process)."""

    endpoint: str
    ca_file: Path
    admin: Credentials


def test_a_rotation_in_flight_completes_after_the_supervisor_restarts_rotation(
    e2e_tools: Any, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    env.update(
        {
            "COFFER_ROTATION_POLL_SECONDS": "0.3",
            "COFFER_ROTATION_LEASE_SECONDS": "2",
            "COFFER_ROTATION_BACKOFF_BASE_SECONDS": "0.1",
            "COFFER_ROTATION_ALLOWED_TARGETS": "127.0.0.1",  # the function listens on a free loopback port
        }
    )
    profile = home / "profile.json"
    supervisor = Supervisor(env, tmp_path / "out")
    fn: FunctionThread | None = None
    try:
        supervisor.wait_running()
        doc = json.loads(profile.read_text())
        target = FromProfile(
            doc["endpoint"], Path(doc["ca_file"]), Credentials(doc["access_key_id"], doc["secret_access_key"])
        )
        client = CofferClient(target.endpoint, target.ca_file, target.admin)
        fn = FunctionThread(target, tmp_path)  # type: ignore[arg-type]
        fn.start()
        reply = client.call(
            "RegisterRotationFunction",
            name="heal-test",
            endpoint=f"127.0.0.1:{fn.port}",
            ca_pem=(fn.pki / "ca.crt").read_text(),
            server_name="api-key-function",
        )
        arn = reply.function.arn  # type: ignore[attr-defined]
        name = f"svc/heal-{uuid.uuid4().hex[:6]}"
        client.create_secret(name=name, secret_string="key-0")
        fn.target.add("key-0")
        fn.hold("setSecret")
        token = client.call("RotateSecret", secret_id=name, rotation_lambda_arn=arn).version_id  # type: ignore[attr-defined]
        assert fn.reached.wait(30), "setSecret was never called"

        kill_and_wait_back(supervisor, home, "rotation")
        fn.release()

        attempt = wait_attempt(client, name, token)
        assert attempt.status == "Succeeded", attempt.error
        assert attempt.tries >= 2, attempt
        current = client.get_secret_value(secret_id=name)
        assert current.version_id == token
        assert fn.target.accepts(current.secret_string)
        assert status_lines(e2e_tools, profile)["rotation"].endswith("SERVING  restarts 1")
    finally:
        if fn is not None:
            fn.stop()
        rc = supervisor.terminate()
    assert rc == 0, supervisor.output()


def test_regions_heal_on_their_own(e2e_tools: Any, tmp_path: Path) -> None:
    """``make run REGIONS=2``: a store SIGKILLed in local-2 is restarted there; ``coffer status`` shows the
    restart for local-2 only."""
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    for service in SERVICES:  # local-2 listens on local-1's ports + 10: both must be free
        while True:
            port = free_port()
            if port_free(port + 10):
                break
        env[f"COFFER_{service.upper()}_ADDR"] = f"127.0.0.1:{port}"
    profile = home / "profile.json"
    region2 = home / "regions" / "local-2"
    supervisor = Supervisor(env, tmp_path / "out", "--regions", "2", "--no-user-profile")
    try:
        supervisor.wait_running(timeout=200)
        pid = pid_of(region2, "store")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        eventually_sync(
            lambda: "[local-2] store     SERVING again" in supervisor.output(),
            timeout=10,
            interval=0.1,
            message=f"local-2's store to be SERVING again:\n{supervisor.output()}",
        )
        result = e2e_tools.cli(profile, "status")
        assert result.returncode == 0, result.stdout + result.stderr
        # the services' lines (the metrics lines after them: replication and the rotation queue)
        lines = [line for line in result.stdout.splitlines() if line.split()[1:2] != ["replication"]]
        lines = [line for line in lines if line.strip() and "rotation-queue" not in line]
        assert len(lines) == 8, lines
        for line in lines:
            region, service = line.split()[:2]
            expected = 1 if (region, service) == ("local-2", "store") else 0
            assert line.endswith(f"SERVING  restarts {expected}"), line
        assert "[local-2] store exited unexpectedly with code -9." in supervisor.output()
    finally:
        rc = supervisor.terminate()
    assert rc == 0, supervisor.output()
