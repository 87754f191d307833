"""Prometheus metrics of what the core does, whichever door the work came in by.

One registry per core (per process): predictions, fallbacks and labels counted from the core's
events, with the channel (api, webhook, telegram, cli) as a label; failed model calls; and the
drift gauges the alert check sets. Each process exposes it: the API at /metrics, the worker and
a stand-alone bot on their ops port.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from core.classify.service import ClassificationService, ReviewsClassified
from core.delivery.drift import DriftMeasured
from core.events import Events
from core.labels.feedback import LabelRevoked, LabelsRecorded


class CoreMetrics:
    def __init__(self, events: Events, classification: ClassificationService) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.predictions = Counter(
            "waimai_predictions",
            "Reviews classified, by label, backend and channel (api, webhook, telegram, cli).",
            ["label", "backend", "channel"],
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
            "Human labels received (correction, confirmation) and revoked (revoked), by channel.",
            ["kind", "channel"],
            registry=self.registry,
        )
        self.correction_rate = Gauge(
            "waimai_correction_rate",
            "Each merchant's share of labelled predictions its labels corrected, over the alert "
            "window (set by the worker's drift check).",
            ["tenant"],
            registry=self.registry,
        )
        self.fallback_rate = Gauge(
            "waimai_fallback_rate",
            "The share of reviews a fallback answered, over the alert window (set by the worker's "
            "drift check).",
            registry=self.registry,
        )
        self.registry.register(_BackendErrors(classification))
        events.subscribe(ReviewsClassified, self.classified)
        events.subscribe(LabelsRecorded, self.labelled)
        events.subscribe(LabelRevoked, self.revoked)
        events.subscribe(DriftMeasured, self.drift)

    def classified(self, event: ReviewsClassified) -> None:
        channel = str(event.source)
        answered = Tally((r.verdict.label.api_name, r.backend, r.fallback) for r in event.results)
        for (label, backend, fallback), count in answered.items():
            self.predictions.labels(label, backend, channel).inc(count)
            if fallback:
                self.fallbacks.labels(backend).inc(count)

    def labelled(self, recorded: LabelsRecorded) -> None:
        for event in recorded.events:
            self.label_events.labels(str(event.kind), str(event.channel)).inc()

    def revoked(self, revoked: LabelRevoked) -> None:
        self.label_events.labels("revoked", str(revoked.event.channel)).inc()

    def drift(self, measured: DriftMeasured) -> None:
        self.correction_rate.clear()
        for rate in measured.corrections:
            self.correction_rate.labels(rate.tenant).set(rate.rate)
        self.fallback_rate.set(measured.fallbacks.rate)

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
