"""The embedded CPU model: holdout accuracy, calibration, training time and batch throughput.

Runs the real pipeline on a temporary store (prepare → train → evaluate) and, in the same run,
times scikit-learn's own char TF-IDF + LinearSVC as the reference the featurizer replaces.

    python -m bench.accuracy
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from bench.store import fresh_core
from core.labels.resolve import training_set
from core.models import registry
from core.models.dataset import load_split
from core.store.tables import Split
from retrain.cycle import run_cycle
from retrain.trainers.local import fit
from serving.local import LocalClassifier

BATCH = 1000
REPEATS = 30


def per_second(work: Callable[[], object], items: int) -> float:
    """Median items/s over REPEATS runs after one warm-up."""
    work()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return items / statistics.median(times)


def main() -> None:
    core = fresh_core("accuracy")
    settings = core.settings
    version = asyncio.run(run_cycle(core, "local")).version
    assert version is not None
    metrics = version.metrics

    data = training_set(core.engine)
    train_times = []
    for _ in range(3):
        started = time.perf_counter()
        fit(data.texts, data.labels, settings.local.ngram_max)
        train_times.append(time.perf_counter() - started)

    texts, labels = load_split(core.engine, Split.TEST)
    batch = (texts * 2)[:BATCH]
    classifier = core.backends.for_version(registry.active(core.engine))
    assert isinstance(classifier, LocalClassifier)
    ours = per_second(lambda: classifier.classify_now(batch), BATCH)
    through_interface = per_second(lambda: asyncio.run(classifier.classify(batch)), BATCH)

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 4), sublinear_tf=True)
    svm = LinearSVC(C=0.5).fit(vectorizer.fit_transform(data.texts), data.labels)
    reference = per_second(lambda: svm.decision_function(vectorizer.transform(batch)), BATCH)
    reference_accuracy = (svm.predict(vectorizer.transform(texts)) == labels).mean()

    table = Table(title=f"local model on the frozen holdout ({metrics['n']:,} reviews)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    table.add_row("accuracy", f"{metrics['accuracy']:.4f}", "≥ 0.905")
    table.add_row("macro-F1", f"{metrics['macro_f1']:.4f}", "")
    table.add_row("calibration error (ECE, 10 bins)", f"{metrics['ece']:.4f}", "small")
    table.add_row("training time, median of 3 (s)", f"{statistics.median(train_times):.2f}", "< 10")
    table.add_row(f"throughput, batches of {BATCH} (reviews/s)", f"{ours:,.0f}", "≥ 30,000")
    table.add_row("  … through the async interface", f"{through_interface:,.0f}", "")
    table.add_row(
        "reference: sklearn char 1-4 TF-IDF + LinearSVC accuracy", f"{reference_accuracy:.4f}", ""
    )
    table.add_row("reference: its throughput (reviews/s)", f"{reference:,.0f}", "")
    table.add_row("speed-up over the reference", f"{ours / reference:.1f}×", "")
    Console().print(table)


if __name__ == "__main__":
    main()
