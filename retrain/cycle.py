"""One turn of the loop: snapshot → train → gate → promote or reject → tell the admins."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from core.models import registry
from core.store.tables import ModelStatus, ModelVersion, TenantView, saved_id
from core.wiring import Core
from retrain import gate, promotion, views
from retrain.gate import Decision
from retrain.resolve import training_set
from retrain.snapshot import snapshot_for
from retrain.trainers import local
from retrain.trainers.zhipu import ZhipuFineTunes

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
    data = await asyncio.to_thread(training_set, core.engine, core.settings.retrain)
    snapshot = await asyncio.to_thread(snapshot_for, core, data)
    active = await asyncio.to_thread(registry.active_or_none, core.engine)
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
        job = await asyncio.to_thread(ZhipuFineTunes(core).launch, snapshot)
        detail = f"Zhipu fine-tune job {job.id} is {job.status}; the worker polls it to the gate"
        return CycleResult("launched", detail, snapshot.content_hash, seconds=_since(started))
    if backend == "lora":
        from retrain.trainers import lora  # torch and peft: imported only when training LoRA

        candidate = await lora.train(core, snapshot, incremental=True)
        await promotion.load_candidate(core, candidate)
    elif backend == "local":
        candidate = await local.train(core, snapshot)
    else:
        raise ValueError(f"no trainer for backend {backend!r}")
    decision = await gate.judge(core, candidate)
    version = await asyncio.to_thread(registry.get, core.engine, saved_id(candidate))
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
