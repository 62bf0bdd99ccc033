"""Read the running mesh's own counts (services.runtime.metrics) from each service's /metrics, and
take the difference of two readings: what a batch of settlements cost, in round trips."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.local.processes import GRPC_SERVICES, MeshLayout

# The counters services.runtime.metrics exposes, by the short name used here.
COUNTERS = {
    "statements": "medpay_sql_statements",
    "transactions": "medpay_sql_transactions",
    "checkouts": "medpay_sql_connection_checkouts",
    "connects": "medpay_sql_connections_opened",
    "grpc_served": "medpay_grpc_server_calls",
    "grpc_made": "medpay_grpc_client_calls",
    "http_made": "medpay_http_client_requests",
    "http_served": "medpay_http_server_requests",
}
_SHORT = {prometheus: short for short, prometheus in COUNTERS.items()}
# Calls a probe makes, not a settlement: left out of gRPC served.
_PROBES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Labels = tuple[tuple[str, str], ...]


@dataclass
class Reading:
    """Counter values by (service, counter, labels)."""

    values: dict[tuple[str, str, Labels], float] = field(default_factory=dict)

    def __sub__(self, earlier: Reading) -> Reading:
        return Reading({key: value - earlier.values.get(key, 0.0) for key, value in self.values.items()})

    def total(self, service: str, counter: str, **match: str) -> float:
        """Sum of one service's counter over the series whose labels include `match`."""
        total = 0.0
        for (name, short, labels), value in self.values.items():
            if name == service and short == counter and _matches(labels, match) and not _probe(labels):
                total += value
        return total

    def by_label(self, service: str, counter: str, label: str) -> dict[str, float]:
        """One service's counter summed by the values of one label."""
        sums: dict[str, float] = defaultdict(float)
        for (name, short, labels), value in self.values.items():
            if name == service and short == counter and not _probe(labels):
                sums[dict(labels).get(label, "")] += value
        return dict(sums)


def _matches(labels: Labels, match: Mapping[str, str]) -> bool:
    present = dict(labels)
    return all(present.get(key) == value for key, value in match.items())


def _probe(labels: Labels) -> bool:
    method = dict(labels).get("method", "")
    return method.startswith(_PROBES)


def parse(service: str, text: str) -> Reading:
    reading = Reading()
    for family in text_string_to_metric_families(text):
        short = _SHORT.get(family.name)
        if short is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = tuple(sorted(sample.labels.items()))
                reading.values[(service, short, labels)] = sample.value
    return reading


async def scrape(layout: MeshLayout, services: Iterable[str] = GRPC_SERVICES) -> Reading:
    """One reading of every service's counters."""
    reading = Reading()
    async with httpx.AsyncClient(timeout=5.0) as client:
        for service in services:
            response = await client.get(layout.metrics_url(service))
            response.raise_for_status()
            reading.values.update(parse(service, response.text).values)
    return reading
