"""The composition root: the one place that names concrete backends and builds the core."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from core.access.admin_sessions import AdminSessions
from core.access.clients import ClientService
from core.access.merchants import MerchantService
from core.classify.reviews import Reviews
from core.classify.service import ClassificationService
from core.classify.stats import ReviewStats
from core.classify.uploads import BatchService
from core.config import Settings
from core.delivery.drift import DriftWatch
from core.delivery.telegram_updates import TelegramUpdates
from core.delivery.webhooks import WebhookService
from core.events import Events
from core.labels.feedback import FeedbackService
from core.labels.overview import LoopOverview
from core.labels.resolve import Resolver
from core.metrics import CoreMetrics
from core.models.dataset import Dataset
from core.models.finetunes import FineTunes
from core.models.gate import Gate
from core.models.registry import ModelVersions
from core.models.report import Reports
from core.models.retrain_requests import RetrainRequests
from core.models.views import TenantViews
from core.store.db import make_engine
from core.store.outbox import BackendAlert, Notifications
from core.store.tables import ModelVersion, TenantView
from serving.base import Classifier
from serving.local import LocalClassifier
from serving.vllm import VllmClassifier
from serving.zhipu import ZhipuClassifier

log = logging.getLogger(__name__)


@dataclass
class Backends:
    """Builds each model version's classifier once and keeps it for the life of the process."""

    settings: Settings
    notifications: Notifications | None = None
    """Where a backend's alerts go for the admins (none: they are only logged)."""
    _loaded: dict[int, Classifier] = field(default_factory=dict)
    _views: OrderedDict[int, Classifier] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _alerts: set[asyncio.Task[None]] = field(default_factory=set)
    """Alerts being published (the loop keeps only weak references to its tasks)."""

    def for_version(self, version: ModelVersion) -> Classifier:
        assert version.id is not None
        with self._lock:
            classifier = self._loaded.get(version.id)
            if classifier is None:
                classifier = self._build(version)
                self._loaded[version.id] = classifier
        if isinstance(classifier, ZhipuClassifier):
            # a refused key or model, no balance, a used-up quota: unusable until a probe is due
            classifier.raise_if_refused()
        return classifier

    def for_view(self, view: TenantView) -> Classifier:
        """A tenant's view; the ``LOCAL__VIEWS_LOADED`` most recently used stay loaded."""
        assert view.id is not None
        with self._lock:
            classifier = self._views.pop(view.id, None)
            if classifier is None:
                classifier = LocalClassifier(self.settings.local.dir, view.model_ref)
            self._views[view.id] = classifier
            while len(self._views) > self.settings.local.views_loaded:
                self._views.popitem(last=False)
        return classifier

    def _build(self, version: ModelVersion) -> Classifier:
        if version.backend == "local":
            return LocalClassifier(self.settings.local.dir, version.model_ref)
        if version.backend == "zhipu":
            return self._zhipu(version.model_ref)
        if version.backend == "vllm":
            return self._vllm(version.model_ref)
        raise ValueError(f"model version {version.id}: unknown backend {version.backend!r}")

    def _zhipu(self, model: str) -> ZhipuClassifier:
        zhipu = self.settings.zhipu
        return ZhipuClassifier(
            zhipu.api_key.get_secret_value() if zhipu.api_key else "",
            model,
            base_url=zhipu.base_url,
            timeout_s=zhipu.timeout_s,
            max_concurrency=zhipu.max_concurrency,
            max_rps=zhipu.max_rps,
            retries=zhipu.retries,
            backoff_initial_s=zhipu.backoff_initial_s,
            backoff_max_s=zhipu.backoff_max_s,
            breaker_failures=zhipu.breaker_failures,
            breaker_reset_s=zhipu.breaker_reset_s,
            account_pause_s=zhipu.account_pause_s,
            disable_thinking=zhipu.disable_thinking,
            on_alert=self._alert_admins("zhipu"),
        )

    def _alert_admins(self, backend: str) -> Callable[[str], None]:
        """Publishes a backend's alert for the admins, from the event loop it was raised in."""

        def alert(message: str) -> None:
            if self.notifications is None:
                return
            publishing = self.notifications.publish(BackendAlert(backend, message))
            task = asyncio.get_running_loop().create_task(publishing)
            self._alerts.add(task)
            task.add_done_callback(self._alert_published)

        return alert

    def _alert_published(self, task: asyncio.Task[None]) -> None:
        self._alerts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not publish a backend alert: %r", task.exception())

    def _vllm(self, adapter: str) -> VllmClassifier:
        vllm = self.settings.vllm
        return VllmClassifier(
            vllm.base_url,
            adapter,
            adapter_path=vllm.adapter_path_on_server(adapter),
            api_key=vllm.api_key.get_secret_value() if vllm.api_key else None,
            timeout_s=vllm.timeout_s,
            concurrency=vllm.concurrency,
            retries=vllm.retries,
            breaker_failures=vllm.breaker_failures,
            breaker_reset_s=vllm.breaker_reset_s,
        )


@dataclass
class Core:
    """Everything a front door needs, built from one Settings: services, each of which decides
    where its store work runs. The engine is for core/ and the loop's own store work (the
    scheduler's job store, label resolution); front doors never touch it."""

    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.db)

    def close(self) -> None:
        """Close the store's connections (the process is done with this core)."""
        if "engine" in self.__dict__:
            self.engine.dispose()

    @cached_property
    def models(self) -> ModelVersions:
        return ModelVersions(self.engine)

    @cached_property
    def reviews(self) -> Reviews:
        return Reviews(self.engine)

    @cached_property
    def stats(self) -> ReviewStats:
        return ReviewStats(self.engine)

    @cached_property
    def dataset(self) -> Dataset:
        return Dataset(self.engine)

    @cached_property
    def resolver(self) -> Resolver:
        return Resolver(self.engine, self.settings.retrain)

    @cached_property
    def finetunes(self) -> FineTunes:
        return FineTunes(self.engine)

    @cached_property
    def reports(self) -> Reports:
        return Reports(self.models)

    @cached_property
    def gate(self) -> Gate:
        return Gate(self.models, self.dataset, self.backends, self.settings.retrain)

    @cached_property
    def backends(self) -> Backends:
        return Backends(self.settings, self.notifications)

    @cached_property
    def classification(self) -> ClassificationService:
        return ClassificationService(
            self.engine, self.backends, self.settings.serving, self.tenant_views, self.events
        )

    @cached_property
    def events(self) -> Events:
        return Events()

    @cached_property
    def drift(self) -> DriftWatch:
        return DriftWatch(self.engine, self.settings.alerts, self.events)

    @cached_property
    def metrics(self) -> CoreMetrics:
        return CoreMetrics(self.events, self.classification)

    @cached_property
    def tenant_views(self) -> TenantViews:
        return TenantViews(self.engine)

    @cached_property
    def feedback(self) -> FeedbackService:
        return FeedbackService(self.engine, self.settings.retrain, self.events)

    @cached_property
    def clients(self) -> ClientService:
        return ClientService(self.engine, cache_s=self.settings.api.key_cache_s)

    @cached_property
    def admin_sessions(self) -> AdminSessions:
        return AdminSessions(self.engine, self.clients)

    @cached_property
    def loop_overview(self) -> LoopOverview:
        return LoopOverview(self.engine)

    @cached_property
    def webhooks(self) -> WebhookService:
        return WebhookService(self.engine, self.classification, self.feedback)

    @cached_property
    def notifications(self) -> Notifications:
        return Notifications(self.engine, poll_s=self.settings.telegram.notify_poll_s)

    @cached_property
    def merchants(self) -> MerchantService:
        return MerchantService(self.engine, self.settings.telegram)

    @cached_property
    def telegram_updates(self) -> TelegramUpdates:
        return TelegramUpdates(self.engine)

    @cached_property
    def batch(self) -> BatchService:
        return BatchService(
            self.classification,
            max_bytes=int(self.settings.telegram.max_file_mb * 1024 * 1024),
            chunk_size=self.settings.telegram.batch_chunk_size,
            max_text_chars=self.settings.serving.max_text_chars,
        )

    @cached_property
    def retrain_requests(self) -> RetrainRequests:
        return RetrainRequests(self.engine, self.notifications)
