"""``make run`` keeps the file seal unless COFFER_SEAL=shamir is set, and passes it to the kms only."""

from __future__ import annotations

from pathlib import Path

from coffer.devrun.config import service_env
from coffer.settings import Settings


def env_of(name: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    settings = Settings.from_env({"COFFER_HOME": str(tmp_path), **extra})
    return service_env(
        name,
        settings,
        base_env={"PATH": "/usr/bin", **extra},
        database_url="postgresql://x/coffer",
        redis_url="redis://x",
        log_dir=tmp_path,
        rotation_credentials=None,
    )


def test_the_default_is_the_file_seal(tmp_path: Path) -> None:
    assert Settings.from_env({}).seal == "file"
    assert env_of("kms", tmp_path)["COFFER_SEAL"] == "file"


def test_shamir_reaches_the_kms_and_no_other_service(tmp_path: Path) -> None:
    assert env_of("kms", tmp_path, COFFER_SEAL="shamir")["COFFER_SEAL"] == "shamir"
    for other in ("gateway", "store", "rotation"):
        assert "COFFER_SEAL" not in env_of(other, tmp_path, COFFER_SEAL="shamir")
