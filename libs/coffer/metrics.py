"""Prometheus metrics (issue 11), served by each service on its own HTTP port (``COFFER_METRICS_ADDR``;
``GET /metrics``, plaintext, nothing else). Built on ``prometheus-client`` (its text format and metric
types), in one registry per process; every metric carries the ``service`` that recorded it, since the tests
run several services in one process.

What is measured, and where:

- ``coffer_rpc_requests_total{service,method,code}`` and ``coffer_rpc_duration_seconds{service,method}``:
  every call every server answers (``coffer.rpc.server.CallInterceptor``, the one place every call passes),
  ``code`` being the gRPC status name;
- ``coffer_db_pool_connections{service,state}``: each asyncpg pool's size, idle and in-use connections and
  its maximum (read when scraped);
- ``coffer_data_key_cache_requests_total{service,result}``: the store's data-key cache, hit or miss;
- ``coffer_audit_write_seconds{service}``: one group commit of audit events;
- ``coffer_rotation_attempts_total{service,rotator,outcome}``: rotation attempts ended, by rotator kind;
- ``coffer_rotation_queue_depth{service}`` and ``coffer_rotation_dead_letters{service}``: the Redis stream;
- ``coffer_replication_backlog{service,peer}`` and ``coffer_replication_lag_seconds{service,peer}``: changes
  not yet acknowledged by each peer region, and the age of the oldest;
- ``coffer_leader{service,job}``: 1 while this process leads a job that runs once per deployment
  (``coffer.leader``, the replicator), 0 while it stands by.

No label ever carries a secret's name, value or a caller's identity (cardinality and privacy).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from coffer import logs
from coffer.httpsite import listen

log = logs.get_logger("coffer.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_REQUESTS = Counter(
    "coffer_rpc_requests",
    "Calls answered, by service, full gRPC method and gRPC status.",
    ("service", "method", "code"),
    registry=REGISTRY,
)
RPC_DURATION = Histogram(
    "coffer_rpc_duration_seconds",
    "Time from a call's admission to its answer, by service and full gRPC method.",
    ("service", "method"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DATA_KEY_CACHE = Counter(
    "coffer_data_key_cache_requests",
    "Lookups in the store's cache of plaintext data keys, by result (hit, miss).",
    ("service", "result"),
    registry=REGISTRY,
)
AUDIT_WRITE = Histogram(
    "coffer_audit_write_seconds",
    "Time of one group commit of audit trail events.",
    ("service",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ROTATION_ATTEMPTS = Counter(
    "coffer_rotation_attempts",
    "Rotation attempts ended, by rotator kind and outcome.",
    ("service", "rotator", "outcome"),
    registry=REGISTRY,
)
ROTATION_QUEUE_DEPTH = Gauge(
    "coffer_rotation_queue_depth",
    "Rotation jobs in the Redis stream not yet acknowledged.",
    ("service",),
    registry=REGISTRY,
)
ROTATION_DEAD_LETTERS = Gauge(
    "coffer_rotation_dead_letters",
    "Rotation jobs moved to the dead-letter stream.",
    ("service",),
    registry=REGISTRY,
)
REPLICATION_BACKLOG = Gauge(
    "coffer_replication_backlog",
    "Changes of this region not yet acknowledged by the peer region.",
    ("service", "peer"),
    registry=REGISTRY,
)
LEADER = Gauge(
    "coffer_leader",
    "1 while this process leads the job (runs it), 0 while it stands by.",
    ("service", "job"),
    registry=REGISTRY,
)
REPLICATION_LAG = Gauge(
    "coffer_replication_lag_seconds",
    "Age of the oldest change the peer region has not acknowledged (0 when in sync).",
    ("service", "peer"),
    registry=REGISTRY,
)


class _PoolCollector(Collector):
    """asyncpg pools' connections, read when scraped (``watch_pool``)."""

    def __init__(self) -> None:
        self._pools: dict[str, Callable[[], tuple[int, int, int]]] = {}

    def add(self, service: str, read: Callable[[], tuple[int, int, int]]) -> None:
        self._pools[service] = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "coffer_db_pool_connections",
            "PostgreSQL pool connections by state (open, idle, in_use) and the pool's maximum (max).",
            labels=("service", "state"),
        )
        for service, read in list(self._pools.items()):
            size, idle, most = read()
            family.add_metric((service, "open"), size)
            family.add_metric((service, "idle"), idle)
            family.add_metric((service, "in_use"), size - idle)
            family.add_metric((service, "max"), most)
        yield family


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def watch_pool(service: str, pool: object) -> None:
    """Report ``pool`` (an asyncpg Pool) as ``service``'s."""

    def read() -> tuple[int, int, int]:
        return (pool.get_size(), pool.get_idle_size(), pool.get_max_size())  # type: ignore[attr-defined]

    _POOLS.add(service, read)


def set_leader(job: str, leading: bool) -> None:
    """Report whether this process leads ``job`` (named ``<service>.<job>``, e.g. ``store.purge``)."""
    LEADER.labels(job.split(".", 1)[0], job).set(1 if leading else 0)


#: (service, method, code) -> its counter and histogram children (``labels()`` once, not per call).
_RPC_CHILDREN: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def observe_rpc(service: str, method: str, code: str, started: float) -> None:
    """One call answered: count it and its latency since ``started`` (``time.perf_counter()``)."""
    key = (service, method, code)
    children = _RPC_CHILDREN.get(key)
    if children is None:
        children = (RPC_REQUESTS.labels(service, method, code), RPC_DURATION.labels(service, method))
        _RPC_CHILDREN[key] = children
    counter, histogram = children
    counter.inc()
    histogram.observe(time.perf_counter() - started)


@dataclass
class MetricsServer:
    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_metrics_server(service: str, bind: str) -> MetricsServer:
    """Serve ``GET /metrics`` on ``bind`` (``host:port``; port 0: any free port), plaintext."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    port = await listen(runner, bind)
    log.info("metrics.started", service=service, port=port)
    return MetricsServer(runner=runner, port=port)
