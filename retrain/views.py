"""Tenants' own views of the CPU model: the shared snapshot with one tenant's labels on top.

A tenant's labels that nobody independent has backed change only the model that answers that
tenant's reviews. A view is trained when its data changed (the shared snapshot or the tenant's
examples) and served if its holdout accuracy is within ``RETRAIN__VIEW_MARGIN`` of the shared
model's, so that a tenant cannot make even its own model forget takeaway reviews by much.
Views are built while the shared model is the CPU one (~1 s each on two cores).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

from core.labels.resolve import Resolution, TenantExamples
from core.models.evaluation import classify_all, metrics
from core.store.tables import ModelVersion, Snapshot, TenantView, saved_id
from core.store.texts import text_hash
from core.wiring import Core
from retrain.trainers import local
from serving.base import Label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holdout:
    texts: list[str]
    labels: list[Label]
    shared_accuracy: float


async def refresh(core: Core, data: Resolution, snapshot: Snapshot) -> list[TenantView]:
    """Train and judge the view of every tenant whose data changed; the views judged now."""
    active = await core.models.active_or_none()
    if active is None or active.backend != "local" or not data.views:
        return []
    stale = {}
    for tenant, examples in data.views.items():
        key = _view_hash(snapshot, examples)
        if await asyncio.to_thread(core.tenant_views.find, tenant, key) is None:
            stale[tenant] = (key, examples)
    if not stale:
        return []
    shared = await asyncio.to_thread(
        _keyed, *await asyncio.to_thread(local.read_snapshot, snapshot)
    )
    holdout = await _holdout(core, active)
    judged = []
    for tenant, (key, examples) in stale.items():
        judged.append(await _train(core, tenant, key, examples, shared, holdout, active))
    return judged


async def _train(
    core: Core,
    tenant: str,
    key: str,
    examples: TenantExamples,
    shared: Keyed,
    holdout: Holdout,
    active: ModelVersion,
) -> TenantView:
    texts, labels = await asyncio.to_thread(_merge, shared, examples)
    started = time.perf_counter()
    model = await asyncio.to_thread(local.fit, texts, labels, core.settings.local.ngram_max)
    seconds = time.perf_counter() - started
    name = f"{local.new_version_name(key)}-view"
    await asyncio.to_thread(
        model.save,
        core.settings.local.dir / name,
        {"tenant": tenant, "view_of": key, "examples": len(texts)},
    )
    view = await asyncio.to_thread(
        core.tenant_views.register,
        TenantView(
            tenant=tenant,
            model_ref=name,
            snapshot=key,
            base_version_id=active.id,
            examples=len(texts),
            own_examples=examples.explicit,
            last_label_event_id=examples.last_event_id,
        ),
    )
    verdicts = await classify_all(core.backends.for_view(view), holdout.texts)
    figures = metrics(holdout.labels, verdicts)
    margin = core.settings.retrain.view_margin
    accuracy = figures["accuracy"]
    serve = accuracy >= holdout.shared_accuracy - margin
    verdict = "served" if serve else f"more than {margin} below it: not served"
    reason = (
        f"holdout accuracy {accuracy:.4f} vs the shared model's "
        f"{holdout.shared_accuracy:.4f}: {verdict}"
    )
    log.info("tenant %s: view %s %s", tenant, view.id, reason)
    return await asyncio.to_thread(
        core.tenant_views.decide,
        saved_id(view),
        serve=serve,
        metrics=figures | {"train_seconds": round(seconds, 2), "left_alone": examples.implicit},
        note=reason,
    )


async def _holdout(core: Core, active: ModelVersion) -> Holdout:
    texts, labels = await core.dataset.holdout()
    accuracy = active.metrics.get("accuracy")
    if accuracy is None:
        verdicts = await classify_all(core.backends.for_version(active), texts)
        accuracy = metrics(labels, verdicts)["accuracy"]
    return Holdout(texts, labels, float(accuracy))


Keyed = dict[str, tuple[str, Label]]
"""Examples by the hash of their normalized text."""


def _keyed(texts: list[str], labels: list[Label]) -> Keyed:
    return {text_hash(t): (t, y) for t, y in zip(texts, labels, strict=True)}


def _merge(shared: Keyed, examples: TenantExamples) -> tuple[list[str], list[Label]]:
    """The shared examples with the tenant's on top (the tenant's label wins on a shared text)."""
    merged = shared | _keyed(examples.texts, examples.labels)
    return [t for t, _ in merged.values()], [y for _, y in merged.values()]


def _view_hash(snapshot: Snapshot, examples: TenantExamples) -> str:
    return hashlib.sha256(f"{snapshot.content_hash}:{examples.content_hash}".encode()).hexdigest()
