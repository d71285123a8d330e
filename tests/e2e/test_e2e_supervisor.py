"""The real ``make run`` supervisor (``python -m coffer.devrun``) as a process: SIGTERM stops every service
cleanly (exit 0 each, a "stopped" line in each service log), and a second run on the same home and database
serves the secret written during the first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coffer.settings import SERVICES
from coffer.testing.wait import eventually_sync

pytestmark = pytest.mark.e2e

SM = "secretsmanager"


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


class Supervisor:
    def __init__(self, env: dict[str, str], out: Path, *args: str) -> None:
        self.out = out
        base = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
        self._fh = open(out, "ab")  # noqa: SIM115 - closed in terminate()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coffer.devrun", *(args or ("--no-user-profile",))],
            env={**base, **env},
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_running(self, timeout: float = 100.0) -> None:

        def running() -> bool:
            if "Coffer is running" in self.output():
                return True
            if self.proc.poll() is not None:
                pytest.fail(f"supervisor exited with {self.proc.returncode}:\n{self.output()}")
            return False

        try:
            eventually_sync(running, timeout=timeout, interval=0.2)
        except AssertionError:
            self.proc.kill()
            pytest.fail(f"supervisor not running after {timeout}s:\n{self.output()}")

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._fh.close()


def test_sigterm_stops_everything_and_a_restart_keeps_the_data(e2e_tools: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    profile = home / "profile.json"
    name = f"e2e-restart-{uuid.uuid4().hex[:8]}"
    value = f"kept-{uuid.uuid4().hex}"

    first = Supervisor(env, tmp_path / "first.out")
    try:
        first.wait_running()
        key = json.loads(profile.read_text())["access_key_id"]
        created = e2e_tools.cli(profile, SM, "create-secret", "--name", name, "--secret-string", value)
        assert created.returncode == 0, created.stderr
        pids = {svc: int((home / "run" / f"{svc}.pid").read_text()) for svc in SERVICES}
    finally:
        rc = first.terminate()
    output = first.output()
    assert rc == 0, output
    for svc in SERVICES:
        assert f"{svc:<9} stopped (exit 0)" in output, output
        log_events = [
            json.loads(line).get("event") for line in (home / "logs" / f"{svc}.log").read_text().splitlines()
        ]
        assert "server.stopped" in log_events, f"{svc} log has no server.stopped line"
        assert not running(pids[svc]), f"{svc} (pid {pids[svc]}) still running"
    assert "Coffer stopped." in output
    assert not list((home / "run").glob("*.pid"))

    second = Supervisor(env, tmp_path / "second.out")
    try:
        second.wait_running()
        assert json.loads(profile.read_text())["access_key_id"] == key  # the admin's access key is reused
        got = e2e_tools.cli(profile, SM, "get-secret-value", "--secret-id", name)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["SecretString"] == value
    finally:
        assert second.terminate() == 0, second.output()


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory outside pytest's basetemp: embedded PostgreSQL (run as 'pgserver' when we are root) must
    traverse its parents, and every new pytest session makes /tmp/pytest-of-<user> 0700 again."""
    path = Path(tempfile.mkdtemp(prefix="coffer-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_make_run_on_embedded_servers_keeps_data_across_restarts(
    e2e_tools: Any, tmp_path: Path, outside_tmp: Path
) -> None:
    """What `make run` does on a fresh machine: embedded PostgreSQL and Redis under COFFER_HOME."""
    home = outside_tmp / "home"
    user_home = tmp_path / "user"
    env = {
        key: value
        for key, value in e2e_tools.env_for(home, database_url="").items()
        if key not in ("COFFER_DATABASE_URL", "COFFER_REDIS_URL")
    }
    env["HOME"] = str(user_home)
    profile = home / "profile.json"
    name = f"e2e-embedded-{uuid.uuid4().hex[:8]}"
    value = f"kept-{uuid.uuid4().hex}"

    first = Supervisor(env, tmp_path / "first.out", "--regions", "1")
    try:
        first.wait_running()
        assert e2e_tools.cli(profile, "status").returncode == 0
        created = e2e_tools.cli(profile, SM, "create-secret", "--name", name, "--secret-string", value)
        assert created.returncode == 0, created.stderr
        redis_port = (home / "redis" / "port").read_text()
        user_profile = user_home / ".config" / "coffer" / "profile.json"
        assert json.loads(user_profile.read_text()) == json.loads(profile.read_text())
        for private_file in (
            profile,
            user_profile,
            home / "keys" / "root.key",
            home / "iam-bootstrap.json",
            home / "rotation-credentials.json",
        ):
            assert mode(private_file) == 0o600, private_file
        # the store is handed signing keys only: the admin's secret is in the profiles alone, the rotation
        # user's in rotation-credentials.json alone (a long-term key: the service assumes its role with it)
        bootstrap = (home / "iam-bootstrap.json").read_text()
        assert json.loads(profile.read_text())["secret_access_key"] not in bootstrap
        rotation_key = json.loads((home / "rotation-credentials.json").read_text())
        assert rotation_key["access_key_id"].startswith("AKIA") and "session_token" not in rotation_key
        assert rotation_key["secret_access_key"] not in bootstrap
        assert len((home / "keys" / "root.key").read_bytes()) == 32
        for private_dir in (home / "pki", home / "keys", home / "logs", home / "redis", user_profile.parent):
            assert mode(private_dir) == 0o700, private_dir
        assert all(mode(p) == 0o600 for p in (home / "logs").iterdir())
        assert all(mode(p) == 0o600 for p in (home / "pki").iterdir())
        postmaster = int((home / "pg" / "postmaster.pid").read_text().split()[0])
    finally:
        rc = first.terminate()
    output = first.output()
    assert rc == 0, output
    assert "redis     stopped" in output and "postgres  stopped" in output, output
    assert not running(postmaster), "PostgreSQL still running after the supervisor stopped"

    second = Supervisor(env, tmp_path / "second.out", "--regions", "1")
    try:
        second.wait_running()
        assert (home / "redis" / "port").read_text() == redis_port  # the same Redis port after a restart
        got = e2e_tools.cli(profile, SM, "get-secret-value", "--secret-id", name)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["SecretString"] == value
    finally:
        assert second.terminate() == 0, second.output()


def test_a_service_that_dies_stops_the_whole_deployment(e2e_tools: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    # A dead service is restarted unless it is in a crash loop: with one exit allowed, the first one is.
    env["COFFER_DEVRUN_CRASH_LOOP_EXITS"] = "1"
    supervisor = Supervisor(env, tmp_path / "out")
    try:
        supervisor.wait_running()
        pids = {svc: int((home / "run" / f"{svc}.pid").read_text()) for svc in SERVICES}
        os.kill(pids["store"], signal.SIGKILL)
        rc = supervisor.proc.wait(timeout=60)
    finally:
        if supervisor.proc.poll() is None:
            supervisor.terminate()
    output = supervisor.output()
    assert rc == 1, output
    assert f"store exited unexpectedly with code {-signal.SIGKILL}." in output
    assert f"--- {home / 'logs' / 'store.log'}" in output  # its log tail is shown
    assert all(not running(pid) for pid in pids.values()), output
    for svc in ("kms", "gateway", "rotation"):
        assert f"{svc:<9} stopped (exit 0)" in output, output


def test_a_service_that_cannot_start_is_reported_with_its_log(e2e_tools: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    with socket.socket() as squatter:  # something else already listens on the kms port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env["COFFER_KMS_ADDR"] = f"127.0.0.1:{squatter.getsockname()[1]}"
        supervisor = Supervisor(env, tmp_path / "out")
        try:
            rc = supervisor.proc.wait(timeout=60)
        finally:
            if supervisor.proc.poll() is None:
                supervisor.terminate()
    output = supervisor.output()
    assert rc == 1, output
    assert "coffer: kms exited with code 1 while starting." in output
    assert "Failed to bind" in output  # the tail of the service's own output says why
    assert "store" not in output.split("coffer: kms exited")[0]  # nothing after kms was started
    assert not (home / "run" / "kms.pid").exists()
