"""deploy/compose.yaml and deploy/Dockerfile, checked statically (no container engine is needed): services and
their settings, PKI mounts and health checks; the image's stages, user and entry points; the run-time lock."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from coffer import deployinit, pki
from coffer.settings import COMMON_KEYS, SERVICE_KEYS, SERVICES
from tests.unit.deploy._manifests import DEPLOY, ROOT, load_script

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICE_CONTAINERS = {"kms": "kms", "store": "store", "gateway-1": "gateway", "gateway-2": "gateway"}
SERVICE_CONTAINERS["rotation"] = "rotation"


def _env(container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = container.get("environment") or {}
    return env


def test_compose_runs_postgres_redis_init_and_four_services_with_two_gateways() -> None:
    assert set(COMPOSE["services"]) == {"postgres", "redis", "init", *SERVICE_CONTAINERS}
    for name, service in SERVICE_CONTAINERS.items():
        assert COMPOSE["services"][name]["command"] == ["python", "-m", f"coffer.{service}"]


@pytest.mark.parametrize("name", sorted(SERVICE_CONTAINERS))
def test_compose_service_gets_only_its_own_settings(name: str) -> None:
    service = SERVICE_CONTAINERS[name]
    keys = {k for k in _env(COMPOSE["services"][name]) if k.startswith("COFFER_")}
    allowed = COMMON_KEYS | SERVICE_KEYS[service]
    assert keys <= allowed, keys - allowed
    own = _env(COMPOSE["services"][name])[f"COFFER_{service.upper()}_ADDR"]
    assert own.startswith("0.0.0.0:")


@pytest.mark.parametrize("name", sorted(SERVICE_CONTAINERS))
def test_compose_service_mounts_only_its_own_pki_directory(name: str) -> None:
    service = SERVICE_CONTAINERS[name]
    container = COMPOSE["services"][name]
    mounts = {m["target"]: m for m in container["volumes"]}
    pki_mount = mounts[_env(container)["COFFER_PKI_DIR"]]
    assert pki_mount["volume"]["subpath"] == f"pki/{service}"
    assert all(m["read_only"] for m in mounts.values())
    subpaths = {m["volume"]["subpath"] for m in mounts.values()}
    assert not any(s.startswith("issuing") or s.startswith("operator") for s in subpaths)
    assert ("kms" in subpaths) == (service == "kms")


@pytest.mark.parametrize("name", sorted({*SERVICE_CONTAINERS, "postgres", "redis"}))
def test_compose_services_have_healthchecks(name: str) -> None:
    check = COMPOSE["services"][name]["healthcheck"]
    assert check["test"][0] == "CMD"
    if name in SERVICE_CONTAINERS:
        assert check["test"] == ["CMD", "python", "-m", "coffer.healthprobe"]
        assert _env(COMPOSE["services"][name])["COFFER_HEALTH_ADDR"] == "0.0.0.0:7480"


def test_compose_init_job_provisions_pki_and_roles_with_the_passwords_services_use() -> None:
    init = COMPOSE["services"]["init"]
    assert init["command"][:3] == ["python", "-m", "coffer.deployinit"]
    assert {"--pki", "--roles"} <= set(init["command"])
    assert set(deployinit.PASSWORD_VARS.values()) | {deployinit.ADMIN_URL_VAR} == set(_env(init))
    for service in ("kms", "store"):
        url = _env(COMPOSE["services"][service])["COFFER_DATABASE_URL"]
        assert url.startswith(f"postgresql://coffer_{service}:${{{deployinit.PASSWORD_VARS[service]}")
        depends = COMPOSE["services"][service]["depends_on"]
        assert "init" in depends or "kms" in depends
    for name in SERVICE_CONTAINERS:
        assert COMPOSE["services"][name]["user"] == "10001:10001"


# ---------------------------------------------------------------------------------------------- Dockerfile


def _stages(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(FROM line, [(instruction, arguments)]) per stage; continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append((args, []))
        elif stages:
            stages[-1][1].append((instruction.upper(), args))
    return stages


DOCKERFILE = _stages((DEPLOY / "Dockerfile").read_text())


def test_image_is_multi_stage_with_a_slim_final_stage() -> None:
    assert len(DOCKERFILE) >= 2
    final_from, _ = DOCKERFILE[-1]
    assert final_from.endswith(" AS final") and final_from.startswith("${PYTHON_IMAGE}")
    arg = (DEPLOY / "Dockerfile").read_text().split("ARG PYTHON_IMAGE=", 1)[1].split()[0]
    assert "-slim" in arg
    build = " ".join(args for _, args in DOCKERFILE[0][1])
    assert "--require-hashes" in build and "requirements.lock" in build
    assert "scripts/genproto.py" in build and "pip wheel" in build


def test_image_final_stage_runs_as_non_root_without_build_tools() -> None:
    _, final = DOCKERFILE[-1]
    users = [args for instruction, args in final if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(args for instruction, args in final if instruction == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "make"):
        assert tool not in runs
    copies = [args for instruction, args in final if instruction == "COPY"]
    assert copies == ["--from=build /opt/coffer /opt/coffer"]
    checks = [args for instruction, args in final if instruction == "HEALTHCHECK"]
    assert len(checks) == 1 and checks[0].endswith('CMD ["python", "-m", "coffer.healthprobe"]')
    assert importlib.util.find_spec("coffer.healthprobe") is not None


def _commands() -> list[list[str]]:
    commands = [
        c["command"] for c in COMPOSE["services"].values() if c.get("image", "").startswith("${COFFER")
    ]
    for path in (DEPLOY / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("Deployment", "Job"):
                containers = doc["spec"].get("template", {}).get("spec", {}).get("containers", [])
                commands += [c["command"] for c in containers if c.get("image") == "coffer"]
    _, final = DOCKERFILE[-1]
    commands += [shlex.split(args.strip("[]").replace(",", " ")) for i, args in final if i == "CMD"]
    return commands


def test_every_entry_point_is_a_runnable_module_of_the_project() -> None:
    modules = set()
    for command in _commands():
        if command[:2] == ["python", "-m"]:
            modules.add(command[2])
        else:
            assert command[0].strip('"') == "coffer"
    assert {f"coffer.{s}" for s in SERVICES} | {"coffer.deployinit"} == modules
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        if spec.submodule_search_locations is not None:  # a package: python -m runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, module
        else:
            assert spec.origin is not None and 'if __name__ == "__main__":' in Path(spec.origin).read_text()


# ------------------------------------------------------------------------------------------- runtime lock


def test_runtime_lock_keeps_run_time_packages_with_their_hashes_only() -> None:
    runtime_lock = load_script("coffer_runtime_lock", ROOT / "scripts" / "runtime_lock.py")
    keep = runtime_lock.runtime_closure()
    assert {"grpcio", "asyncpg", "cryptography", "structlog"} <= keep
    assert not {"ruff", "mypy", "pytest", "hatchling", "kubernetes-validate", "grpcio-tools"} & keep
    text = runtime_lock.filter_lock((ROOT / "requirements.lock").read_text(), keep)
    pinned = re.findall(r"^([a-z0-9._-]+)==", text, flags=re.MULTILINE)
    assert "grpcio" in pinned and "ruff" not in pinned and "pytest" not in pinned
    for block in re.split(r"\n(?=[a-z0-9])", text.split("\n", 2)[2]):
        if "==" in block.splitlines()[0]:
            assert "--hash=sha256:" in block, block.splitlines()[0]


def test_service_pki_files_are_what_coffer_pki_installs() -> None:
    assert pki.service_files("gateway") == ("gateway.crt", "gateway.key", pki.SIGNING_KEY)
