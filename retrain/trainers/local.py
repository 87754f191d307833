"""Train the embedded CPU model: char n-gram TF-IDF + LinearSVC, Platt-calibrated out of fold."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import LinearSVC

from core.store.tables import ModelVersion, Snapshot
from core.wiring import Core
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


def read_snapshot(snapshot: Snapshot) -> tuple[list[str], list[Label]]:
    """All examples of a snapshot (train and validation: calibration uses its own folds)."""
    texts, labels = [], []
    for name in ("train.jsonl", "validation.jsonl"):
        with (Path(snapshot.directory) / name).open(encoding="utf-8") as lines:
            for line in lines:
                _, user, assistant = json.loads(line)["messages"]
                texts.append(user["content"])
                labels.append(Label.from_zh(assistant["content"]))
    return texts, labels


async def train(core: Core, snapshot: Snapshot) -> ModelVersion:
    """Train on a snapshot, save the artifact in a new folder, register it as a candidate."""
    texts, labels = await asyncio.to_thread(read_snapshot, snapshot)
    started = time.perf_counter()
    model = await asyncio.to_thread(fit, texts, labels, core.settings.local.ngram_max)
    seconds = time.perf_counter() - started
    name = new_version_name(snapshot.content_hash)
    await asyncio.to_thread(
        model.save,
        core.settings.local.dir / name,
        {"snapshot": snapshot.content_hash, "examples": len(texts)},
    )
    return await core.models.register(
        backend="local",
        model_ref=name,
        metrics={"train_seconds": round(seconds, 2), "examples": len(texts)},
        snapshot=snapshot.content_hash,
        note=f"trained on {len(texts)} examples in {seconds:.1f}s",
    )
