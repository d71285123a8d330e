"""``coffer status``'s lines from the services' Prometheus metrics (``coffer.metrics``): each peer region's
replication backlog and lag (the store's), and the rotation queue's depth and dead letters (the rotation
service's), read from the metrics URLs the profile lists. A service whose metrics cannot be read gets a line
saying so; the health lines above already say whether it serves."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Mapping

from prometheus_client.parser import text_string_to_metric_families

from coffer.settings import service_of


def _scrape(url: str, timeout: float) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8", errors="replace")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def metrics_lines(urls: Mapping[str, str], *, timeout: float) -> Iterator[str]:
    """The status lines of one region (``urls``: service instance -> metrics URL; nothing when there are
    none). With several replicas (``store``, ``store-2``...) the store's lines come from whichever replica
    leads the replicator (the others report no peers), the rotation queue's from the first one readable."""
    for service, build in (("store", _replication), ("rotation", _rotation_queue)):
        instances = [(name, url) for name, url in urls.items() if service_of(name) == service and url]
        found: dict[str, list[tuple[dict[str, str], float]]] = {}
        failures: list[str] = []
        for _name, url in instances:
            try:
                scraped = _scrape(url, timeout)
            except (OSError, ValueError) as exc:  # urllib's URLError is an OSError
                reason = getattr(exc, "reason", None) or exc
                failures.append(f"metrics  {service}'s metrics unreadable at {url} ({reason})")
                continue
            for metric, samples in scraped.items():
                found.setdefault(metric, []).extend(samples)
            if service == "rotation":
                break  # one queue in Redis: every replica reports the same depth
        if instances and len(failures) == len(instances):
            yield from failures
        elif instances:
            yield from build(found)


def _replication(found: Mapping[str, list[tuple[dict[str, str], float]]]) -> Iterator[str]:
    lags: dict[str, float] = {}
    backlogs: dict[str, float] = {}
    for labels, value in found.get("coffer_replication_lag_seconds", []):
        peer = labels.get("peer", "")
        lags[peer] = max(value, lags.get(peer, 0.0))
    for labels, value in found.get("coffer_replication_backlog", []):
        peer = labels.get("peer", "")
        backlogs[peer] = max(value, backlogs.get(peer, 0.0))
    for peer in sorted(backlogs):
        yield f"replication  to {peer}  backlog {backlogs[peer]:.0f}  lag {lags.get(peer, 0.0):.1f} s"


def _rotation_queue(found: Mapping[str, list[tuple[dict[str, str], float]]]) -> Iterator[str]:
    depth = sum(value for _labels, value in found.get("coffer_rotation_queue_depth", []))
    dead = sum(value for _labels, value in found.get("coffer_rotation_dead_letters", []))
    yield f"rotation-queue  waiting {depth:.0f}  dead letters {dead:.0f}"
