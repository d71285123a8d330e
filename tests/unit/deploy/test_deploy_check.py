"""`make deploy-check`: every overlay renders and validates; a manifest broken on purpose fails it; the
Python renderer agrees with kubectl; the manifests mirror Coffer's own rules (settings, PKI, callers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from coffer import pki
from coffer.settings import COMMON_KEYS, SERVICE_KEYS, SERVICES
from tests.unit.deploy._manifests import CHECK_SCRIPT, K8S, by_kind, deploy_check

OVERLAYS = ("dev", "ha")
RENDERERS = ["python", *(["kubectl"] if shutil.which("kubectl") else [])]


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK_SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("renderer", RENDERERS)
def test_deploy_check_passes_on_every_overlay(renderer: str) -> None:
    proc = run_check("--renderer", renderer)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for overlay in OVERLAYS:
        assert f"overlays/{overlay} " in proc.stdout


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    """A copy of deploy/k8s to break (overlays refer to ../../base, so the whole tree is copied)."""
    target = tmp_path / "k8s"
    shutil.copytree(K8S, target)
    return target


def _add_patch(overlay: Path, name: str, text: str) -> None:
    (overlay / name).write_text(text)
    kfile = overlay / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    spec.setdefault("patches", []).append({"path": name})
    kfile.write_text(yaml.safe_dump(spec))


@pytest.mark.parametrize("renderer", RENDERERS)
def test_deploy_check_fails_on_a_wrong_field_type(k8s_copy: Path, renderer: str) -> None:
    overlay = k8s_copy / "overlays" / "dev"
    _add_patch(
        overlay,
        "broken.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: gateway\nspec:\n  replicas: three\n",
    )
    proc = run_check("--renderer", renderer, str(overlay))
    assert proc.returncode == 1, proc.stdout
    assert "FAIL" in proc.stdout and "Deployment/gateway: spec.replicas" in proc.stdout


@pytest.mark.parametrize("renderer", RENDERERS)
def test_deploy_check_fails_on_a_missing_required_field(k8s_copy: Path, renderer: str) -> None:
    service = k8s_copy / "base" / "kms.yaml"
    text = service.read_text()
    assert "      port: 7445\n" in text
    service.write_text(text.replace("      port: 7445\n", "", 1))  # a Service port without its port
    proc = run_check("--renderer", renderer, str(k8s_copy / "overlays" / "ha"))
    assert proc.returncode == 1, proc.stdout
    assert "Service/kms: spec.ports.0: 'port' is a required property" in proc.stdout


def test_deploy_check_fails_on_a_broken_custom_resource(k8s_copy: Path) -> None:
    certs = k8s_copy / "base" / "certificates.yaml"
    certs.write_text(certs.read_text().replace("    algorithm: ECDSA", "    algorithm: DSA", 1))
    proc = run_check("--renderer", "python", str(k8s_copy / "overlays" / "dev"))
    assert proc.returncode == 1, proc.stdout
    assert "Certificate/coffer-gateway: spec.privateKey.algorithm" in proc.stdout


def test_deploy_check_fails_on_a_deployment_without_probes(k8s_copy: Path) -> None:
    rotation = k8s_copy / "base" / "rotation.yaml"
    rotation.write_text(rotation.read_text().replace("readinessProbe:", "startupProbe:", 1))
    proc = run_check("--renderer", "python", str(k8s_copy / "overlays" / "dev"))
    assert proc.returncode == 1, proc.stdout
    assert "Deployment/rotation: container rotation: no readinessProbe" in proc.stdout


def test_python_renderer_refuses_what_it_does_not_support(k8s_copy: Path) -> None:
    kfile = k8s_copy / "overlays" / "dev" / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    spec["namePrefix"] = "x-"
    kfile.write_text(yaml.safe_dump(spec))
    with pytest.raises(deploy_check.RenderError, match="namePrefix"):
        deploy_check.render(kfile.parent)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_python_renderer_agrees_with_kubectl(overlay: str) -> None:
    directory = K8S / "overlays" / overlay
    ours = sorted(deploy_check.render(directory), key=_key)
    theirs = sorted(deploy_check.render_kubectl(directory, shutil.which("kubectl")), key=_key)
    assert [_key(o) for o in ours] == [_key(o) for o in theirs]
    for mine, kubectl in zip(ours, theirs, strict=True):
        assert mine == kubectl, _key(mine)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = deploy_check.render(K8S / "overlays" / request.param)
    return objects


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_each_service_gets_only_its_own_settings(rendered: list[dict[str, Any]]) -> None:
    deployments = by_kind(rendered, "Deployment")
    for service in SERVICES:
        container = _container(deployments[service])
        assert container["command"] == ["python", "-m", f"coffer.{service}"]
        names = {e["name"] for e in container["env"]}
        assert names <= COMMON_KEYS | SERVICE_KEYS[service], names - (COMMON_KEYS | SERVICE_KEYS[service])
    assert not {"COFFER_DATABASE_URL", "COFFER_REDIS_URL"} & {
        e["name"] for e in _container(deployments["gateway"])["env"]
    }


def test_probes_ask_the_plaintext_health_port(rendered: list[dict[str, Any]]) -> None:
    deployments = by_kind(rendered, "Deployment")
    for service in SERVICES:
        container = _container(deployments[service])
        health_addr = next(e["value"] for e in container["env"] if e["name"] == "COFFER_HEALTH_ADDR")
        port = int(health_addr.rpartition(":")[2])
        assert container["readinessProbe"]["grpc"] == {"port": port}
        assert container["livenessProbe"]["grpc"] == {"port": port}
        assert {"name": "health", "containerPort": port, "protocol": "TCP"} in container["ports"]


def test_each_service_mounts_the_ca_and_only_its_own_pki_files(rendered: list[dict[str, Any]]) -> None:
    deployments = by_kind(rendered, "Deployment")
    for service in SERVICES:
        volumes = {v["name"]: v for v in deployments[service]["spec"]["template"]["spec"]["volumes"]}
        files = {
            item["path"]
            for source in volumes["pki"]["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        assert files == {"ca.crt", *pki.service_files(service)}
        secrets = {v.get("secret", {}).get("secretName") for v in volumes.values()}
        assert ("coffer-root-key" in secrets) == (service == "kms")
        assert ("coffer-iam-bootstrap" in secrets) == (service == "store")
        assert ("coffer-rotation-credentials" in secrets) == (service == "rotation")


def test_certificates_mirror_the_dev_pki(rendered: list[dict[str, Any]]) -> None:
    certificates = by_kind(rendered, "Certificate")
    for identity in pki.SERVICE_IDENTITIES:
        spec = certificates[f"coffer-{identity}"]["spec"]
        usage = pki.usage_of(identity)
        assert spec["commonName"] == identity
        # The dev PKI's loopback names (the gateway's, for `make run`'s AWS endpoint on 127.0.0.1) are not
        # a cluster's: there clients reach the gateway by its service name.
        cluster_names = tuple(n for n in usage.dns if n not in pki.GATEWAY_LOCAL_NAMES)
        assert tuple(spec.get("dnsNames", ())) == cluster_names
        assert ("server auth" in spec["usages"]) == usage.server
        assert ("client auth" in spec["usages"]) == usage.client
        assert spec["issuerRef"] == {"kind": "Issuer", "name": "coffer-ca"}


def _callers(policy: dict[str, Any]) -> set[str] | None:
    """The pods admitted on the grpc port (None: from anywhere)."""
    for rule in policy["spec"]["ingress"]:
        if any(p["port"] == "grpc" for p in rule["ports"]):
            if "from" not in rule:
                return None
            return {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]}
    return set()


def test_network_policies_admit_only_each_services_callers(rendered: list[dict[str, Any]]) -> None:
    policies = by_kind(rendered, "NetworkPolicy")
    assert _callers(policies["gateway"]) is None
    assert _callers(policies["store"]) == {"gateway", "rotation", "kms"}  # kms: directory, audit Append
    assert _callers(policies["kms"]) == {"store", "gateway"}
    assert _callers(policies["rotation"]) == set()
    for service in SERVICES:
        ports = {p["port"] for rule in policies[service]["spec"]["ingress"] for p in rule["ports"]}
        assert "metrics" in ports


def test_overlay_specific_objects() -> None:
    dev = deploy_check.render(K8S / "overlays" / "dev")
    ha = deploy_check.render(K8S / "overlays" / "ha")
    assert {d["spec"]["replicas"] for d in by_kind(dev, "Deployment").values()} == {1}
    assert "postgres" in by_kind(dev, "StatefulSet")
    assert not by_kind(dev, "PodDisruptionBudget")
    assert all(by_kind(ha, "Deployment")[s]["spec"]["replicas"] >= 2 for s in SERVICES)
    assert set(by_kind(ha, "PodDisruptionBudget")) == set(SERVICES)
    assert by_kind(ha, "Cluster")["coffer-pg"]["spec"]["instances"] == 3
    assert by_kind(ha, "ServiceMonitor")["coffer"]["spec"]["endpoints"] == [
        {"port": "metrics", "interval": "30s"}
    ]
