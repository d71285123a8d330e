"""``make run`` as root must not open the directories above COFFER_HOME: pgserver (which runs PostgreSQL as
the 'pgserver' user) adds o+rx to every parent of the data directory. A COFFER_HOME under a 0700 directory,
the deployment's PostgreSQL started as devrun starts it: the parent stays 0700 and the server works."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from coffer.devrun.processes import private_dir
from coffer.embedded import EmbeddedPostgres, _pg_install_dirs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="pgserver changes directory modes only when run as root"),
]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def closed_parent() -> Iterator[Path]:
    """A 0700 directory (outside pytest's basetemp, which pgserver must not see opened either)."""
    root = Path(tempfile.mkdtemp(prefix="coffer-test-closed-"))
    os.chmod(root, 0o700)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def relocate_root() -> Iterator[Path]:
    """Where the relocated data goes for this test (``RELOCATED_DATA_ROOT`` in ``make run``)."""
    root = Path(tempfile.mkdtemp(prefix="coffer-test-reloc-"))
    try:
        yield root / "pgdata"
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _answers(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


def test_a_closed_parent_of_coffer_home_stays_closed(closed_parent: Path, relocate_root: Path) -> None:
    home = closed_parent / "home"
    private_dir(home)  # as Deployment.prepare makes it
    install_parents = {p: _mode(p) for d in _pg_install_dirs() for p in d.parents}
    server = EmbeddedPostgres(home / "pg", relocate_root=relocate_root)
    try:
        url = server.start()
        assert asyncio.run(_answers(url)) == 1
        assert asyncio.run(_answers(server.url())) == 1
        assert _mode(closed_parent) == 0o700
        assert _mode(home) & 0o077 in (0, 0o011)  # at most traversable, never listable by others
        assert {p: _mode(p) for p in install_parents} == install_parents
        assert (home / "pg").is_symlink() and (home / "pg" / "PG_VERSION").exists()
    finally:
        server.stop()


def test_a_home_under_open_parents_keeps_its_data_in_place(relocate_root: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="coffer-test-open-"))
    os.chmod(root, 0o755)
    server = EmbeddedPostgres(root / "home" / "pg", relocate_root=relocate_root)
    try:
        private_dir(root / "home")
        server.start()
        assert not (root / "home" / "pg").is_symlink() and (root / "home" / "pg" / "PG_VERSION").exists()
        assert _mode(root) == 0o755 and _mode(root / "home") == 0o711
        assert not relocate_root.exists()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
