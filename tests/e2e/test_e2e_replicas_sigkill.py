"""Two replicas of every service, as ``make run REPLICAS=2`` starts them (the real supervisor, processes, one
PostgreSQL and one Redis), under a steady mixed load of gets, puts and rotations from a retrying client.
One replica of each service is SIGKILLed in turn — for the kms and the store the one leading their run-once
jobs. Afterwards: every acknowledged write is there with its value, nothing was written that the client did
not ask for, each rotation ran once and succeeded, each leader-only job moved to the survivor within
seconds, and the client saw no failure a retry could have hidden (each failure is counted and printed)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.credentials import Credentials
from coffer.client.sync import CofferClient
from coffer.core.errors import CofferError
from coffer.devrun.processes import port_free
from coffer.embedded import free_port
from coffer.settings import SERVICES
from coffer.testing.wait import eventually_sync
from tests.e2e.test_e2e_rotation_crash import wait_attempt
from tests.e2e.test_e2e_supervisor import Supervisor

pytestmark = pytest.mark.e2e

#: The jobs each service runs on one replica only (``coffer_leader{job}``).
LEADER_JOBS = {"kms": "kms.maintenance", "store": "store.purge"}
#: Writes per secret before the writer moves to a fresh one (AWS keeps ~100 versions; stay well below).
PUTS_PER_SECRET = 25
#: The supervisor waits this long before restarting a killed instance, so a leader's failover can only go
#: to the survivor (which campaigns every second).
RESTART_DELAY_SECONDS = 2.0


def pid_of(home: Path, instance: str) -> int:
    return int((home / "run" / f"{instance}.pid").read_text())


def leads(metrics_url: str, job: str) -> bool | None:
    """Whether the instance behind ``metrics_url`` leads ``job`` (None: it does not answer)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:  # a local http URL
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(rf'^coffer_leader\{{[^}}]*job="{re.escape(job)}"[^}}]*\}} (\S+)$', text, re.M)
    return match is not None and float(match.group(1)) == 1.0


def the_leader(metrics: dict[str, str], names: tuple[str, ...], job: str) -> str:
    """The one instance of ``names`` that leads ``job`` (waiting for an election if there is none yet)."""

    def leaders() -> list[str]:
        return [name for name in names if leads(metrics[name], job)]

    found = eventually_sync(
        leaders, until=lambda found: len(found) == 1, timeout=15, interval=0.2, message=f"one leader of {job}"
    )
    return found[0]


def _found(pattern: re.Pattern[str], supervisor: Supervisor) -> bool:
    return pattern.search(supervisor.output()) is not None


@dataclass
class Failure:
    operation: str
    code: str
    message: str


@dataclass
class Load:
    """A steady mixed load on its own threads: puts (each with its token, into a ledger), gets of the last
    acknowledged value, and rotations (each of a fresh secret, with the random-value rotator)."""

    client: CofferClient
    prefix: str
    stop: threading.Event = field(default_factory=threading.Event)
    #: token -> (secret, value) of every put the service acknowledged
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: token -> (secret, value) of puts whose outcome the client does not know (the call failed)
    unknown: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: secret -> the version it was created with
    created: dict[str, str] = field(default_factory=dict)
    #: (secret, token) of every rotation the service accepted
    rotations: list[tuple[str, str]] = field(default_factory=list)
    gets: int = 0
    failures: list[Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: tuple[str, str] | None = None  # (secret, value) last acknowledged

    def _guard(self, operation: str, **fields: Any) -> Any:
        """``operation`` with ``fields``, retried as the client's policy says; a failure is counted."""
        try:
            return self.client.call(operation, **fields)
        except CofferError as exc:
            with self.lock:
                self.failures.append(Failure(operation, exc.code, str(exc)[:300]))
            return None

    def writer(self, index: int) -> None:
        """Puts to secrets of its own (``<prefix>/w<index>-<k>``), a fresh one every PUTS_PER_SECRET."""
        n = 0
        secret = ""
        while not self.stop.is_set():
            if n % PUTS_PER_SECRET == 0:
                secret = f"{self.prefix}/w{index}-{n // PUTS_PER_SECRET}"
                token = str(uuid.uuid4())
                reply = self._guard(
                    "CreateSecret", name=secret, secret_string="v-initial", client_request_token=token
                )
                if reply is None:
                    time.sleep(0.2)
                    continue  # tried again (same name, a new token) at the next turn
                self.created[secret] = reply.version_id
            token = str(uuid.uuid4())
            value = f"v-{n}-{uuid.uuid4().hex[:8]}"
            reply = self._guard(
                "PutSecretValue", secret_id=secret, secret_string=value, client_request_token=token
            )
            with self.lock:
                if reply is None:
                    self.unknown[token] = (secret, value)
                else:
                    assert reply.version_id == token
                    self.acked[token] = (secret, value)
                    self.last = (secret, value)
            n += 1
            time.sleep(0.02)

    def reader(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                last = self.last
            if last is None:
                time.sleep(0.05)
                continue
            secret, _ = last
            reply = self._guard("GetSecretValue", secret_id=secret)
            if reply is not None:
                with self.lock:
                    self.gets += 1
            time.sleep(0.01)

    def rotator(self) -> None:
        n = 0
        while not self.stop.is_set():
            secret = f"{self.prefix}/r{n}"
            n += 1
            if self._guard("CreateSecret", name=secret, secret_string="r0") is None:
                continue
            token = str(uuid.uuid4())
            reply = self._guard(
                "RotateSecret",
                secret_id=secret,
                rotation_lambda_arn="random-value",
                client_request_token=token,
            )
            if reply is not None:
                with self.lock:
                    self.rotations.append((secret, token))
            self.stop.wait(0.7)


def replica_ports_env(env: dict[str, str]) -> None:
    """Free ports for the first replicas whose ``+1000`` (the second replicas', as under ``make run``)
    are free too."""
    for key in [f"COFFER_{service.upper()}_ADDR" for service in SERVICES] + ["COFFER_AWS_ADDR"]:
        while True:
            port = free_port()
            if port_free(port + 1000):
                break
        env[key] = f"127.0.0.1:{port}"


def test_one_replica_of_each_service_killed_in_turn_under_load(e2e_tools: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = e2e_tools.env_for(home, database_url=e2e_tools.new_database())
    replica_ports_env(env)
    env.update(
        {
            "COFFER_DEVRUN_RESTART_DELAY_SECONDS": str(RESTART_DELAY_SECONDS),
            "COFFER_ROTATION_POLL_SECONDS": "0.3",
            "COFFER_ROTATION_LEASE_SECONDS": "2",
            "COFFER_ROTATION_BACKOFF_BASE_SECONDS": "0.1",
        }
    )
    supervisor = Supervisor(env, tmp_path / "out", "--replicas", "2", "--no-user-profile")
    load: Load | None = None
    threads: list[threading.Thread] = []
    try:
        supervisor.wait_running(timeout=200)
        doc = json.loads((home / "profile.json").read_text())
        assert "," in doc["endpoint"]  # both gateways
        metrics: dict[str, str] = doc["metrics"]
        admin = Credentials(doc["access_key_id"], doc["secret_access_key"])
        # A client as an application would configure it: both gateways, 5 attempts in the standard mode.
        client = CofferClient(doc["endpoint"], Path(doc["ca_file"]), admin, max_attempts=5, timeout=20)
        load = Load(client, f"e2e-ha-{uuid.uuid4().hex[:6]}")
        threads = [
            threading.Thread(target=load.writer, args=(0,), daemon=True, name="writer-0"),
            threading.Thread(target=load.writer, args=(1,), daemon=True, name="writer-1"),
            threading.Thread(target=load.reader, daemon=True, name="reader"),
            threading.Thread(target=load.rotator, daemon=True, name="rotator"),
        ]
        for thread in threads:
            thread.start()
        time.sleep(3)  # steady load before the first kill

        failovers: dict[str, float] = {}
        for service in ("kms", "store", "gateway", "rotation"):
            job = LEADER_JOBS.get(service)
            names = (service, f"{service}-2")
            victim = names[1] if job is None else the_leader(metrics, names, job)
            survivor = next(name for name in names if name != victim)
            killed_at = time.monotonic()
            os.kill(pid_of(home, victim), signal.SIGKILL)
            if job is not None:
                eventually_sync(
                    partial(leads, metrics[survivor], job),
                    until=bool,
                    timeout=RESTART_DELAY_SECONDS + 5,
                    interval=0.1,
                    message=f"{survivor} to take over {job} after {victim} was killed",
                )
                failovers[job] = time.monotonic() - killed_at
            back = re.compile(rf"^{re.escape(victim)} +SERVING again", re.M)
            eventually_sync(
                partial(_found, back, supervisor),
                timeout=60,
                interval=0.2,
                message=f"{victim} to be SERVING again:\n{supervisor.output()}",
            )
            time.sleep(1)  # load on the healed pair before the next kill

        load.stop.set()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), thread.name

        acked, unknown, created = load.acked, load.unknown, load.created
        failures, rotations = load.failures, load.rotations
        print(
            f"\nreplicas under SIGKILL: {len(acked)} puts acknowledged, {load.gets} gets, {len(rotations)} "
            f"rotations; client-visible failures {len(failures)}: "
            f"{[(f.operation, f.code) for f in failures]}; "
            f"leader failover (s): { {job: round(s, 2) for job, s in failovers.items()} }"
        )
        assert len(acked) > 50 and load.gets > 50 and len(rotations) >= 5, (len(acked), load.gets, rotations)

        # every leader-only job moved to the survivor within seconds
        for job, took in failovers.items():
            assert took < RESTART_DELAY_SECONDS + 2, (job, took)

        # no acknowledged write lost: each version is there with its value
        for token, (secret, value) in acked.items():
            got = client.get_secret_value(secret_id=secret, version_id=token)
            assert got.secret_string == value, (secret, token)
        # nothing written that was not asked for: each secret's versions are its creation and the puts sent
        for secret, first in created.items():
            listed = client.list_secret_version_ids(secret_id=secret, include_deprecated=True)
            assert isinstance(listed, sm.ListSecretVersionIdsResponse)
            versions = {entry.version_id for entry in listed.versions}
            sent = {token for token, (name, _) in {**acked, **unknown}.items() if name == secret}
            assert first in versions and versions - {first} <= sent, (secret, versions - sent - {first})
            # an acknowledged put's version is there; an unknown one's, if there, holds what was sent
            for token in versions & set(unknown):
                assert (
                    client.get_secret_value(secret_id=secret, version_id=token).secret_string
                    == unknown[token][1]
                )

        # each rotation ran once, to success: one attempt per token, and its version is AWSCURRENT
        for secret, token in rotations:
            attempt = wait_attempt(client, secret, token, within=60)
            assert attempt.status == "Succeeded", (secret, attempt.error)
            listed_attempts = client.call("ListRotationAttempts", secret_id=secret)
            assert isinstance(listed_attempts, sm.ListRotationAttemptsResponse)
            assert [a.version_id for a in listed_attempts.attempts] == [token]
            assert client.get_secret_value(secret_id=secret).version_id == token

        # client-visible failures: only calls no retry could make safe (none expected: every write here
        # carries its token, so a retry is always safe, and reads are retried)
        assert failures == [], failures

        status = e2e_tools.cli(home / "profile.json", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
        for service in SERVICES:
            for name in (service, f"{service}-2"):
                assert " SERVING " in lines[name], lines
        client.close()
    finally:
        if load is not None:
            load.stop.set()
        rc = supervisor.terminate()
    assert rc == 0, supervisor.output()
