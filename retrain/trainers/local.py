"""Train the embedded CPU model: char n-gram TF-IDF + LinearSVC, Platt-calibrated out of fold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import LinearSVC

from core import registry
from core.config import Settings
from core.data import load_split
from core.evaluation import evaluate
from core.tables import ModelVersion, Split
from core.wiring import Core
from retrain.resolve import training_set
from serving.base import Label
from serving.local import CharNgramTfidf, LinearModel

SVM_C = 0.5
CALIBRATION_FOLDS = 5


def fit(
    texts: Sequence[str], labels: Sequence[Label], ngram_max: int, seed: int = 0
) -> LinearModel:
    """Fit the features, the SVM, and a sigmoid on the SVM's out-of-fold scores."""
    y = np.array([int(label) for label in labels])
    if len(set(y)) < 2:
        raise ValueError("training needs examples of both labels")
    features = CharNgramTfidf.fit(texts, ngram_max)
    x = features.transform(texts)
    svm = LinearSVC(C=SVM_C).fit(x, y)
    folds = StratifiedKFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_predict(LinearSVC(C=SVM_C), x, y, cv=folds, method="decision_function")
    platt = LogisticRegression(C=1e4).fit(scores.reshape(-1, 1), y)
    return LinearModel(
        features=features,
        weights=svm.coef_.ravel().astype(np.float64),
        bias=float(svm.intercept_[0]),
        platt_a=float(platt.coef_[0, 0]),
        platt_c=float(platt.intercept_[0]),
    )


def new_version_name(snapshot: str) -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{snapshot[:8]}"


async def train_and_register(core: Core) -> ModelVersion:
    """Train on the current training set, save a new artifact, evaluate it, register it.

    The first model ever trained becomes active; later ones stay candidates for the gate.
    """
    settings: Settings = core.settings
    data = await asyncio.to_thread(training_set, core.engine)
    started = time.perf_counter()
    model = await asyncio.to_thread(fit, data.texts, data.labels, settings.local.ngram_max)
    train_seconds = time.perf_counter() - started

    name = new_version_name(data.content_hash)
    directory: Path = settings.local.dir / name
    model.save(
        directory,
        {"snapshot": data.content_hash, "examples": len(data.texts), "human_labels": data.human},
    )
    version = registry.register(
        core.engine,
        backend="local",
        model_ref=name,
        metrics={},
        snapshot=data.content_hash,
        note=f"trained on {len(data.texts)} examples ({data.human} human) in {train_seconds:.1f}s",
    )
    texts, labels = await asyncio.to_thread(load_split, core.engine, Split.TEST)
    metrics = await evaluate(core.backends.for_version(version), texts, labels)
    metrics |= {
        "train_seconds": round(train_seconds, 2),
        "examples": len(data.texts),
        "human_labels": data.human,
    }
    return registry.record_metrics(core.engine, version.id or 0, metrics, activate_if_none=True)
