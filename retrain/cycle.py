"""One turn of the loop: snapshot → train → gate → promote or reject → tell the admins."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from core import registry
from core.tables import ModelVersion
from core.wiring import Core
from retrain import gate, promotion
from retrain.gate import Decision
from retrain.snapshot import snapshot_for
from retrain.trainers import local
from retrain.trainers.zhipu import ZhipuFineTunes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleResult:
    outcome: str
    """skipped | launched (a remote job) | promoted | rejected | candidate"""
    detail: str
    snapshot: str
    version: ModelVersion | None = None
    decision: Decision | None = None
    seconds: float = 0.0


async def run_cycle(core: Core, backend: str | None = None, *, force: bool = False) -> CycleResult:
    """Retrain with ``backend`` (default: the setting) unless the data has not changed."""
    backend = backend or core.settings.retrain.backend
    started = time.perf_counter()
    snapshot = await asyncio.to_thread(snapshot_for, core)
    active = await asyncio.to_thread(registry.active_or_none, core.engine)
    if not force and active is not None and active.snapshot == snapshot.content_hash:
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
    version = await asyncio.to_thread(registry.get, core.engine, candidate.id or 0)
    outcome = {"active": "promoted", "rejected": "rejected"}.get(version.status, "candidate")
    log.info("retrain %s: version %s %s — %s", backend, version.id, outcome, decision.reason)
    return CycleResult(
        outcome,
        decision.reason,
        snapshot.content_hash,
        version,
        decision,
        _since(started),
    )


def _since(started: float) -> float:
    return time.perf_counter() - started
