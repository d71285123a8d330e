"""A real Redis Sentinel deployment for tests (issue 11): a password-protected master, one replica and three
sentinels (quorum 2), each its own ``valkey-server`` process (the embedded binary; ``--sentinel`` mode for
the sentinels) on loopback, in a directory of its own. ``kill_master`` SIGKILLs the master so the sentinels
fail over to the replica, as they would in production."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis
from redis.exceptions import RedisError

from coffer.embedded import _redis_binary, free_port

MASTER_NAME = "coffer"
#: How long the sentinels wait before calling a silent master down, and the failover's own time limit.
DOWN_AFTER_MS = 600
FAILOVER_TIMEOUT_MS = 4000


def _client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(port=port, password=password, socket_timeout=2, socket_connect_timeout=2)


@dataclass
class SentinelCluster:
    root: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    master_port: int = 0
    replica_port: int = 0
    sentinel_ports: list[int] = field(default_factory=list)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, timeout: float = 15.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.master_port, self.replica_port = free_port(), free_port()
        self._server("master", self.master_port, [])
        self._server("replica", self.replica_port, [f"replicaof 127.0.0.1 {self.master_port}"])
        for index in range(3):
            port = free_port()
            self.sentinel_ports.append(port)
            conf = self.root / f"sentinel-{index}.conf"  # the sentinel rewrites it: its own, writable
            conf.write_text(
                "\n".join(
                    [
                        "bind 127.0.0.1",
                        f"port {port}",
                        f"dir {self.root}",
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2",
                        f"sentinel auth-pass {MASTER_NAME} {self.password}",
                        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                        f"logfile {self.root / f'sentinel-{index}.log'}",
                        "",
                    ]
                )
            )
            self._spawn(f"sentinel-{index}", [str(conf), "--sentinel"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.replica_synced() and all(self._sentinel_knows_replica(p) for p in self.sentinel_ports):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Sentinel test deployment did not come up within {timeout}s; see {self.root}")

    def _server(self, name: str, port: int, extra: list[str]) -> None:
        conf = self.root / f"{name}.conf"
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    f"dir {self.root / name}",
                    "appendonly yes",
                    f"requirepass {self.password}",
                    f"masterauth {self.password}",
                    f"logfile {self.root / f'{name}.log'}",
                    *extra,
                    "",
                ]
            )
        )
        (self.root / name).mkdir(exist_ok=True)
        self._spawn(name, [str(conf)])

    def _spawn(self, name: str, args: list[str]) -> None:
        self._procs[name] = subprocess.Popen(
            [_redis_binary(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def replica_synced(self) -> bool:
        try:
            with _client(self.replica_port, self.password) as client:
                return bool(client.info("replication").get("master_link_status") == "up")
        except RedisError:
            return False

    def _sentinel_knows_replica(self, port: int) -> bool:
        try:
            with _client(port) as client:
                replicas = client.sentinel_slaves(MASTER_NAME)
        except RedisError:
            return False
        return any(int(r.get("port", 0)) == self.replica_port for r in replicas)

    def master_port_now(self) -> int | None:
        """The master's port as the first sentinel that answers says it is."""
        for port in self.sentinel_ports:
            try:
                with _client(port) as client:
                    found = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except RedisError:
                continue
            if found:
                return int(found[1])
        return None

    def url(self, db: int = 0) -> str:
        """The ``redis+sentinel://`` URL Coffer takes (``coffer.redisconn``)."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://:{quote(self.password, safe='')}@{hosts}/{MASTER_NAME}/{db}"

    def kill_master(self) -> None:
        """SIGKILL the master (no shutdown, no save): the sentinels promote the replica."""
        proc = self._procs["master"]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
