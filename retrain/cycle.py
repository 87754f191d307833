"""One turn of the loop: snapshot → train → gate → promote or reject → tell the admins."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from core.models.gate import Decision
from core.store.tables import ModelStatus, ModelVersion, TenantView, saved_id
from core.wiring import Core
from retrain import views
from retrain.snapshot import snapshot_for
from retrain.trainers import local
from retrain.trainers.zhipu import ZhipuFineTunes
from retrain.trainers.zhipu_errors import FineTunePaused, OverBudget, TooFewNewLabels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleResult:
    outcome: str
    """skipped | views (only tenants' views changed) | launched (a remote job) | promoted |
    rejected | candidate"""
    detail: str
    snapshot: str
    version: ModelVersion | None = None
    decision: Decision | None = None
    seconds: float = 0.0
    views: list[TenantView] = field(default_factory=list)
    """Tenants' own views judged in this run."""


async def run_cycle(core: Core, backend: str | None = None, *, force: bool = False) -> CycleResult:
    """Retrain with ``backend`` (default: the setting) unless the data has not changed."""
    backend = backend or core.settings.retrain.backend
    started = time.perf_counter()
    data = await core.resolver.resolve()
    snapshot = await asyncio.to_thread(snapshot_for, core, data)
    active = await core.models.active_or_none()
    if not force and active is not None and active.snapshot == snapshot.content_hash:
        judged = await views.refresh(core, data, snapshot) if backend == "local" else []
        if judged:
            return CycleResult(
                "views",
                f"the shared model's data is unchanged; {_views_detail(judged)}",
                snapshot.content_hash,
                views=judged,
                seconds=_since(started),
            )
        return CycleResult(
            "skipped", "the active model was trained on this very data", snapshot.content_hash
        )

    if backend == "zhipu":
        try:
            job = await asyncio.to_thread(ZhipuFineTunes(core).launch, snapshot)
        except (TooFewNewLabels, OverBudget, FineTunePaused) as held:
            # Not failures: the budget, the new labels or Zhipu's quota say "not now".
            return CycleResult("skipped", held.message, snapshot.content_hash)
        detail = f"Zhipu fine-tune job {job.id} is {job.status}; the worker polls it to the gate"
        return CycleResult("launched", detail, snapshot.content_hash, seconds=_since(started))
    if backend == "lora":
        from retrain.trainers import lora  # torch and peft: imported only when training LoRA

        candidate = await lora.train(core, snapshot, incremental=True)
        await core.gate.canaries(candidate)  # the server loads the adapter and answers
    elif backend == "local":
        candidate = await local.train(core, snapshot)
    else:
        raise ValueError(f"no trainer for backend {backend!r}")
    decision = await core.gate.judge(candidate)
    version = await core.models.get(saved_id(candidate))
    outcome = {"active": "promoted", "rejected": "rejected"}.get(version.status, "candidate")
    log.info("retrain %s: version %s %s — %s", backend, version.id, outcome, decision.reason)
    judged = await views.refresh(core, data, snapshot) if backend == "local" else []
    detail = decision.reason + (f"; {_views_detail(judged)}" if judged else "")
    return CycleResult(
        outcome,
        detail,
        snapshot.content_hash,
        version,
        decision,
        _since(started),
        judged,
    )


def _views_detail(judged: list[TenantView]) -> str:
    served = sum(view.status == ModelStatus.ACTIVE for view in judged)
    return f"{len(judged)} tenant view(s) trained, {served} served"


def _since(started: float) -> float:
    return time.perf_counter() - started
