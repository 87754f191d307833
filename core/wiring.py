"""The composition root: the one place that names concrete backends and builds the core."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from core.classification import ClassificationService
from core.config import Settings
from core.db import make_engine
from core.feedback import FeedbackService
from core.tables import ModelVersion
from serving.base import Classifier
from serving.local import LocalClassifier


@dataclass
class Backends:
    """Builds each model version's classifier once and keeps it for the life of the process."""

    settings: Settings
    _loaded: dict[int, Classifier] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def for_version(self, version: ModelVersion) -> Classifier:
        assert version.id is not None
        with self._lock:
            classifier = self._loaded.get(version.id)
            if classifier is None:
                classifier = self._build(version)
                self._loaded[version.id] = classifier
            return classifier

    def _build(self, version: ModelVersion) -> Classifier:
        if version.backend == "local":
            return LocalClassifier(self.settings.local.dir, version.model_ref)
        raise ValueError(f"model version {version.id}: unknown backend {version.backend!r}")


@dataclass
class Core:
    """Everything a front door needs, built from one Settings."""

    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.db)

    @cached_property
    def backends(self) -> Backends:
        return Backends(self.settings)

    @cached_property
    def classification(self) -> ClassificationService:
        return ClassificationService(self.engine, self.backends, self.settings.serving)

    @cached_property
    def feedback(self) -> FeedbackService:
        return FeedbackService(self.engine)
