"""Prometheus metrics of one app: its HTTP requests and their latency, beside the core's own
(predictions, fallbacks, backend errors, labels: ``core.metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from core.wiring import Core


class Metrics:
    """The app's own registry (several apps in one process do not collide)."""

    def __init__(self, core: Core) -> None:
        self._core = core.metrics
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "waimai_http_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "waimai_http_request_duration_seconds",
            "Time to answer an HTTP request, by route and status.",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry) + self._core.exposition()
