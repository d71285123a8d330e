"""``coffer status``'s lines from the services' Prometheus metrics (``coffer.metrics``): each peer region's
replication backlog and lag (the store's), and the rotation queue's depth and dead letters (the rotation
service's), read from the metrics URLs the profile lists. A service whose metrics cannot be read gets a line
saying so; the health lines above already say whether it serves."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Mapping

from prometheus_client.parser import text_string_to_metric_families


def _scrape(url: str, timeout: float) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8", errors="replace")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def metrics_lines(urls: Mapping[str, str], *, timeout: float) -> Iterator[str]:
    """The status lines of one region (``urls``: service -> metrics URL; nothing when there are none)."""
    for service, build in (("store", _replication), ("rotation", _rotation_queue)):
        url = urls.get(service)
        if not url:
            continue
        try:
            found = _scrape(url, timeout)
        except (OSError, ValueError) as exc:  # urllib's URLError is an OSError
            reason = getattr(exc, "reason", None) or exc
            yield f"metrics  {service}'s metrics unreadable at {url} ({reason})"
            continue
        yield from build(found)


def _replication(found: Mapping[str, list[tuple[dict[str, str], float]]]) -> Iterator[str]:
    lags = {
        labels.get("peer", ""): value for labels, value in found.get("coffer_replication_lag_seconds", [])
    }
    for labels, backlog in sorted(
        found.get("coffer_replication_backlog", []), key=lambda s: s[0].get("peer", "")
    ):
        peer = labels.get("peer", "")
        yield f"replication  to {peer}  backlog {backlog:.0f}  lag {lags.get(peer, 0.0):.1f} s"


def _rotation_queue(found: Mapping[str, list[tuple[dict[str, str], float]]]) -> Iterator[str]:
    depth = sum(value for _labels, value in found.get("coffer_rotation_queue_depth", []))
    dead = sum(value for _labels, value in found.get("coffer_rotation_dead_letters", []))
    yield f"rotation-queue  waiting {depth:.0f}  dead letters {dead:.0f}"
