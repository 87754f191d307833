"""Holdout metrics of any Classifier, measured through the same interface the service uses."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from serving.base import (
    Answer,
    BackendError,
    BulkClassifier,
    Classifier,
    Declined,
    Label,
    Verdict,
)

log = logging.getLogger(__name__)

ECE_BINS = 10


async def classify_all(
    classifier: Classifier,
    texts: Sequence[str],
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> list[Answer]:
    """Every text's answer: in one offline job where the backend offers one, else (or when that
    job fails) in batches; raises BackendError as the classifier does."""
    if isinstance(classifier, BulkClassifier):
        try:
            return list(await classifier.classify_bulk(texts, progress))
        except BackendError as error:
            log.warning("the offline batch failed (%s); classifying request by request", error)
    answers: list[Answer] = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        answers.extend(await classifier.classify(batch))
        if progress is not None:
            progress(len(batch))
    return answers


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


def metrics(truth: Sequence[Label], answers: Sequence[Answer]) -> dict[str, Any]:
    """The figures over every row; a declined row counts against accuracy as a wrong answer and
    is left out of the per-class figures, the confusion matrix and the calibration."""
    answered = [(y, a) for y, a in zip(truth, answers, strict=True) if isinstance(a, Verdict)]
    verdicts = [a for _, a in answered]
    y_true = np.array([int(y) for y, _ in answered], dtype=int)
    y_pred = np.array([int(v.label) for v in verdicts], dtype=int)
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
    right = int((y_true == y_pred).sum())
    return {
        "n": len(truth),
        "accuracy": round(right / len(truth), 4) if truth else 0.0,
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4),
        "per_class": per_class,
        "confusion": {
            "labels": ["negative", "positive"],
            "matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        },
        "ece": expected_calibration_error(y_true, verdicts),
        "reliability": reliability(y_true, verdicts),
        "declined": sum(isinstance(a, Declined) for a in answers),
    }


def expected_calibration_error(
    y_true: np.ndarray[Any, Any], verdicts: Sequence[Verdict]
) -> float | None:
    """Mean |confidence − accuracy| over equal-width confidence bins, weighted by bin size."""
    bins = reliability(y_true, verdicts)
    if bins is None:
        return None
    total = sum(b["n"] for b in bins)
    error = sum(b["n"] / total * abs(b["confidence"] - b["accuracy"]) for b in bins)
    return round(float(error), 4)


def reliability(
    y_true: np.ndarray[Any, Any], verdicts: Sequence[Verdict]
) -> list[dict[str, float]] | None:
    """Per equal-width confidence bin that holds verdicts: its range, size, mean confidence and
    accuracy (the reliability diagram); None when the model gives no confidence."""
    if not verdicts or any(v.confidence is None for v in verdicts):
        return None
    confidence = np.array([v.confidence for v in verdicts], dtype=float)
    correct = np.array([int(v.label) for v in verdicts]) == y_true
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    return [
        {
            "low": b / ECE_BINS,
            "high": (b + 1) / ECE_BINS,
            "n": int((bins == b).sum()),
            "confidence": round(float(confidence[bins == b].mean()), 4),
            "accuracy": round(float(correct[bins == b].mean()), 4),
        }
        for b in np.unique(bins)
    ]
