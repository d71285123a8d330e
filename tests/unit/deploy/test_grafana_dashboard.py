"""The Grafana dashboard in deploy/ asks only for metrics Coffer serves (``coffer.metrics``), and every
service's manifest serves them on the port its ServiceMonitor scrapes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from coffer import metrics

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "coffer-dashboard.json"


def _served_names() -> set[str]:
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update({f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum")})
    return names


def test_every_panel_queries_metrics_coffer_serves() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    asked = {name for expr in exprs for name in re.findall(r"\bcoffer_[a-z_]+", expr)}
    assert asked and asked <= _served_names(), asked - _served_names()
    # the dashboard covers what issue 11 names
    for wanted in (
        "coffer_rpc_requests_total",
        "coffer_rpc_duration_seconds_bucket",
        "coffer_db_pool_connections",
        "coffer_data_key_cache_requests_total",
        "coffer_rotation_attempts_total",
        "coffer_rotation_queue_depth",
        "coffer_replication_lag_seconds",
        "coffer_audit_write_seconds_bucket",
    ):
        assert wanted in asked, wanted


def test_every_service_manifest_serves_metrics_on_the_scraped_port() -> None:
    for service in ("gateway", "store", "kms", "rotation"):
        docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / f"{service}.yaml").read_text()))
        deployment = next(d for d in docs if d and d.get("kind") == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["COFFER_METRICS_ADDR"] == f"0.0.0.0:{ports['metrics']}", service
