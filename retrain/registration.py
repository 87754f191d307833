"""Models that a remote backend serves already: register one, measure it on the holdout."""

from __future__ import annotations

import asyncio

from core.errors import BackendUnavailable
from core.models import registry
from core.models.dataset import load_split
from core.models.evaluation import evaluate
from core.store.tables import ModelVersion, Split, saved_id
from core.wiring import Core
from serving.base import BackendError


async def add_model(
    core: Core, backend: str, model: str, *, evaluate_it: bool, note: str = "added by hand"
) -> ModelVersion:
    """Register ``model`` of ``backend`` (say a Zhipu base model) as a candidate version."""
    version = await asyncio.to_thread(
        registry.register, core.engine, backend=backend, model_ref=model, metrics={}, note=note
    )
    if evaluate_it:
        version = await evaluate_version(core, version)
    return version


async def evaluate_version(core: Core, version: ModelVersion) -> ModelVersion:
    """Holdout metrics of ``version``, stored on it; BackendUnavailable if it cannot answer."""
    texts, labels = await asyncio.to_thread(load_split, core.engine, Split.TEST)
    try:
        metrics = await evaluate(core.backends.for_version(version), texts, labels)
    except BackendError as error:
        raise BackendUnavailable(
            f"model version {version.id} cannot be evaluated: {error}"
        ) from error
    return await asyncio.to_thread(registry.record_metrics, core.engine, saved_id(version), metrics)
