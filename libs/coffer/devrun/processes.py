"""The service processes of a ``make run`` deployment: spawning, health waits, log tails, stopping, and the
leftovers (pid files, Redis, PostgreSQL) of a supervisor that was killed.

Blocking code (subprocesses, sleeps): it never runs inside an event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coffer.devrun.config import START_WAVES, connect_address, service_of
from coffer.embedded import EmbeddedPostgres, EmbeddedRedis
from coffer.rpc.tls import TlsFiles, channel_credentials, name_options, service_host

LOG_TAIL_LINES = 30
LOCK_FILE_NAME = "devrun.lock"
#: The supervisor's state file (each service's restarts, for ``coffer status``), under ``$COFFER_HOME/run``.
STATE_FILE_NAME = "supervisor.json"


class DeploymentError(Exception):
    """The deployment could not start, or a service died; the message says which and shows its log tail."""


# --------------------------------------------------------------------------------------------------- files


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically (a temp file renamed over the target)."""
    if not path.parent.exists():
        private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a text file ([] when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


# ------------------------------------------------------------------------------------------------- health


def health_tls(pki_dir: Path, service: str) -> TlsFiles:
    """The gateway is public (plain TLS, CA only); internal services want the operator's certificate."""
    if service == "gateway":
        return TlsFiles(ca=pki_dir / "ca.crt")
    return TlsFiles.for_identity(pki_dir, "operator")


def check_health(address: str, *, tls: TlsFiles, service: str, timeout: float = 2.0) -> str:
    """The overall health status name (``SERVING``, ``NOT_SERVING``...) or ``UNAVAILABLE: <why>``, from the
    service ``service`` (its certificate must name ``<service>.coffer.internal``)."""
    options = name_options(service_host(service))
    with grpc.secure_channel(connect_address(address), channel_credentials(tls), options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            return f"{code.name if code else 'UNKNOWN'}: {details}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


# ---------------------------------------------------------------------------------------------- processes


@dataclass
class ServiceProcess:
    """One running service instance (``python -m coffer.<service>``; ``name`` is the service's, or
    ``<service>-2``... for its further replicas), its pid file and its two logs (the service's own log file
    and ``<name>.out``, where stdout and stderr go)."""

    name: str
    address: str
    proc: subprocess.Popen[bytes]
    log_file: Path
    out_file: Path
    pid_file: Path
    service: str = ""

    def __post_init__(self) -> None:
        if not self.service:
            self.service = self.name

    @classmethod
    def spawn(
        cls,
        name: str,
        *,
        python: str,
        env: dict[str, str],
        address: str,
        log_dir: Path,
        run_dir: Path,
        service: str = "",
    ) -> ServiceProcess:
        service = service or name
        out_file = log_dir / f"{name}.out"
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                [python, "-m", f"coffer.{service}"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only the supervisor, which stops services in order
                umask=0o077,
            )
        finally:
            os.close(fd)
        pid_file = run_dir / f"{name}.pid"
        write_private(pid_file, str(proc.pid))
        return cls(name, address, proc, log_dir / f"{name}.log", out_file, pid_file, service)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = []
        for path in (self.log_file, self.out_file):
            text = tail(path, lines)
            if text:
                parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts) if parts else f"(no output in {self.log_file} or {self.out_file})"

    def wait_serving(self, pki_dir: Path, timeout: float) -> None:
        """Until the service answers SERVING; :class:`DeploymentError` when it exits or takes too long."""
        tls = health_tls(pki_dir, self.service)
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise DeploymentError(
                    f"{self.name} exited with code {code} while starting.\n{self.log_tail()}"
                )
            status = check_health(self.address, tls=tls, service=self.service, timeout=1.0)
            if status == "SERVING":
                return
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"{self.name} did not report SERVING on {self.address} within {timeout:.0f}s "
                    f"(last answer: {status}).\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def reap(self, timeout: float) -> int:
        """Wait for the process to exit (SIGKILL after ``timeout``), remove its pid file, return its code."""
        code = wait_or_kill(self.proc, timeout)
        self.pid_file.unlink(missing_ok=True)
        return code


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the servers themselves: connections in TIME_WAIT do not make a port busy, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------- leftovers


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_while(condition: Callable[[], bool], timeout: float) -> None:
    """Sleep while ``condition()`` holds, ``timeout`` seconds at the most (the caller checks what it got)."""
    deadline = time.monotonic() + timeout
    while condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_leftovers(home: Path, *, echo: Callable[[str], None], timeout: float = 15.0) -> None:
    """Stop service processes, Redis and PostgreSQL that a killed supervisor left running for ``home``."""
    run_dir = home / "run"
    leftovers: list[int] = []
    order = {name: index for index, wave in enumerate(START_WAVES) for name in wave}
    pid_files = sorted(
        run_dir.glob("*.pid"), key=lambda path: -order.get(service_of(path.stem), len(order))
    )  # the last wave first, the replicas of a service (``store-2.pid``...) with it
    for pid_file in pid_files:
        name = pid_file.stem
        if service_of(name) in order:
            try:
                pid = int(pid_file.read_text().strip())
            except (FileNotFoundError, ValueError):
                continue
            if _pid_alive(pid) and f"coffer.{service_of(name)}" in _pid_cmdline(pid):
                echo(f"{name:<9} left running by an earlier supervisor (pid {pid}): stopping it")
                os.kill(pid, signal.SIGTERM)
                leftovers.append(pid)
            pid_file.unlink(missing_ok=True)
    (run_dir / STATE_FILE_NAME).unlink(missing_ok=True)  # a killed supervisor's restarts are stale
    _wait_while(lambda: any(_pid_alive(pid) for pid in leftovers), timeout)
    for pid in leftovers:
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    redis_dir = home / "redis"
    port_file, pw_file = redis_dir / "port", redis_dir / "password"
    if port_file.exists() and pw_file.exists():
        port = int(port_file.read_text().strip() or 0)
        leftover = EmbeddedRedis(redis_dir, port=port, password=pw_file.read_text().strip())
        if port and not port_free(port) and leftover._ping():
            echo(f"redis     left running on port {port}: shutting it down")
            with contextlib.suppress(OSError):
                leftover._command("SHUTDOWN", "SAVE")
            _wait_while(lambda: not port_free(port), timeout)


def _postmaster_running(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip())
    except (FileNotFoundError, ValueError):
        return False
    return _pid_alive(pid)


def stop_all(home: Path, *, echo: Callable[[str], None], timeout: float = 30.0) -> int:
    """``make stop``: ask a running supervisor to stop; then stop whatever a killed one left behind."""
    lock_file = home / LOCK_FILE_NAME
    if lock_file.exists():
        with open(lock_file, "a+", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
            except BlockingIOError:
                lock.seek(0)
                pid = int(lock.read().strip() or 0)
                if pid:
                    echo(f"asking the supervisor (pid {pid}) to stop")
                    os.kill(pid, signal.SIGTERM)
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the supervisor has stopped everything
                fcntl.flock(lock, fcntl.LOCK_UN)
    homes = [home, *sorted(p for p in (home / "regions").glob("*") if p.is_dir())]
    for region_home in homes:  # a `make run REGIONS=n` keeps the other regions under home/regions/
        stop_leftovers(region_home, echo=echo, timeout=timeout)
        pgdata = region_home / "pg"
        if _postmaster_running(pgdata):
            pg = EmbeddedPostgres(pgdata)
            pg.start()  # attaches to the running postmaster
            pg.stop()
            echo(f"postgres  stopped ({region_home})")
    return 0
