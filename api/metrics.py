"""Prometheus metrics of one app: requests, predictions, fallbacks, backend errors, labels."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from core.classify.service import ClassificationService, Classified
from core.store.tables import LabelEvent


class Metrics:
    """The app's own registry (several apps in one process do not collide)."""

    def __init__(self, classification: ClassificationService) -> None:
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
        self.predictions = Counter(
            "waimai_predictions",
            "Reviews classified, by label and backend.",
            ["label", "backend"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "waimai_fallbacks",
            "Reviews a fallback model answered, by the backend that answered.",
            ["backend"],
            registry=self.registry,
        )
        self.label_events = Counter(
            "waimai_label_events",
            "Human labels received (correction, confirmation) and revoked (revoked).",
            ["kind"],
            registry=self.registry,
        )
        self.registry.register(_BackendErrors(classification))

    def classified(self, results: Iterable[Classified]) -> None:
        answered = Tally((r.verdict.label.api_name, r.backend, r.fallback) for r in results)
        for (label, backend, fallback), count in answered.items():
            self.predictions.labels(label, backend).inc(count)
            if fallback:
                self.fallbacks.labels(backend).inc(count)

    def labelled(self, event: LabelEvent, *, revoked: bool = False) -> None:
        self.label_events.labels("revoked" if revoked else str(event.kind)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _BackendErrors(Collector):
    """Failed model calls, counted by the core as they happen, read at each scrape."""

    def __init__(self, classification: ClassificationService) -> None:
        self._classification = classification

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "waimai_backend_errors", "Model calls that gave no usable answer.", labels=["backend"]
        )
        for backend, count in sorted(self._classification.backend_errors.items()):
            family.add_metric([backend], count)
        yield family
