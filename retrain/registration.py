"""Models that a remote backend serves already: register one, measure it on the holdout."""

from __future__ import annotations

from core.errors import BackendUnavailable
from core.models.evaluation import evaluate
from core.store.tables import ModelVersion, saved_id
from core.wiring import Core
from serving.base import BackendError


async def add_model(
    core: Core, backend: str, model: str, *, evaluate_it: bool, note: str = "added by hand"
) -> ModelVersion:
    """Register ``model`` of ``backend`` (say a Zhipu base model) as a candidate version."""
    version = await core.models.register(backend=backend, model_ref=model, metrics={}, note=note)
    if evaluate_it:
        version = await evaluate_version(core, version)
    return version


async def evaluate_version(core: Core, version: ModelVersion) -> ModelVersion:
    """Holdout metrics of ``version``, stored on it; BackendUnavailable if it cannot answer."""
    texts, labels = await core.dataset.holdout()
    try:
        metrics = await evaluate(core.backends.for_version(version), texts, labels)
    except BackendError as error:
        raise BackendUnavailable(
            f"model version {version.id} cannot be evaluated: {error}"
        ) from error
    return await core.models.record_metrics(saved_id(version), metrics)
