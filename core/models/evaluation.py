"""Holdout metrics of any Classifier, measured through the same interface the service uses."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from serving.base import Classifier, Label, Verdict

ECE_BINS = 10


async def classify_all(
    classifier: Classifier,
    texts: Sequence[str],
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> list[Verdict]:
    """Every text's verdict, in batches; raises BackendError as the classifier does."""
    verdicts: list[Verdict] = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        verdicts.extend(await classifier.classify(batch))
        if progress is not None:
            progress(len(batch))
    return verdicts


async def evaluate(
    classifier: Classifier,
    texts: Sequence[str],
    labels: Sequence[Label],
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix and calibration error."""
    started = time.perf_counter()
    verdicts = await classify_all(classifier, texts, batch_size=batch_size, progress=progress)
    return metrics(labels, verdicts) | {"seconds": round(time.perf_counter() - started, 3)}


def metrics(truth: Sequence[Label], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    y_true = np.array([int(label) for label in truth])
    y_pred = np.array([int(v.label) for v in verdicts])
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1], zero_division=0
    )
    per_class = {
        label.api_name: {
            "precision": round(float(precision[label]), 4),
            "recall": round(float(recall[label]), 4),
            "support": int(support[label]),
        }
        for label in Label
    }
    return {
        "n": len(y_true),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4),
        "per_class": per_class,
        "confusion": {
            "labels": ["negative", "positive"],
            "matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        },
        "ece": expected_calibration_error(y_true, verdicts),
    }


def expected_calibration_error(
    y_true: np.ndarray[Any, Any], verdicts: Sequence[Verdict]
) -> float | None:
    """Mean |confidence − accuracy| over equal-width confidence bins, weighted by bin size."""
    if not verdicts or any(v.confidence is None for v in verdicts):
        return None
    confidence = np.array([v.confidence for v in verdicts], dtype=float)
    correct = np.array([int(v.label) for v in verdicts]) == y_true
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    error = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        error += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return round(float(error), 4)
