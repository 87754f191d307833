"""Hot-swap a LoRA adapter into the running vLLM server, then make it the active version.

1. Load the version's folder under its own new name (``POST /v1/load_lora_adapter``); a name is
   never reused, so no stale weights are served.
2. Ask it a few canary reviews through the same classifier the service uses.
3. Let the holdout gate decide (``core.models.gate``); it switches the active pointer in the
   store, in one transaction.

The adapter it replaces stays loaded, so ``waimai models rollback`` is only a pointer switch. An
adapter the server refuses (a missing folder, a rank above ``--max-lora-rank``) or that cannot
answer the canaries is rejected with the server's reason; the active one keeps serving.
"""

from __future__ import annotations

import contextlib

from core.config import VllmSettings
from core.errors import BackendUnavailable, Conflict
from core.models.gate import ADAPTER_REFUSED, CANARY_REVIEWS, answered_all
from core.store.tables import ModelStatus, ModelVersion, saved_id
from core.wiring import Core
from serving.base import BackendError, Verdict
from serving.vllm import VllmRefused, VllmServer


def server(vllm: VllmSettings) -> VllmServer:
    api_key = vllm.api_key.get_secret_value() if vllm.api_key else None
    return VllmServer(vllm.base_url, api_key=api_key, timeout_s=vllm.timeout_s)


async def load_candidate(core: Core, version: ModelVersion) -> list[Verdict]:
    """Make the server serve ``version`` and check that it answers the canaries.

    A refusal rejects the version with the reason (and unloads it if it got loaded); an
    unreachable server changes nothing. Either way ``BackendUnavailable`` is raised.
    """
    if version.backend != "vllm":
        raise Conflict(f"model version {version.id} is a {version.backend} model, not a LoRA one")
    vllm = core.settings.vllm
    name = version.model_ref
    vllm_server = server(vllm)
    try:
        listed = await vllm_server.models()
    except BackendError as error:
        raise BackendUnavailable(f"vLLM could not be asked about {name}: {error}") from error
    loaded_now = False
    try:
        if name not in listed:
            await vllm_server.load_adapter(name, vllm.adapter_path_on_server(name))
            loaded_now = True
        return answered_all(await core.backends.for_version(version).classify(CANARY_REVIEWS))
    except BackendError as error:
        if loaded_now:
            reason = f"adapter {name} loaded but failed the canary reviews: {error}"
        elif isinstance(error, VllmRefused) and name not in listed:
            reason = f"vLLM refused adapter {name}: {error}"
        else:
            raise BackendUnavailable(f"vLLM could not be asked about {name}: {error}") from error
    if loaded_now:
        await _unload_quietly(vllm_server, name)
    if version.status == ModelStatus.CANDIDATE:
        await core.models.decide(saved_id(version), False, reason, version.metrics)
    raise BackendUnavailable(reason, code=ADAPTER_REFUSED)


async def ensure_serving(core: Core) -> list[str]:
    """Load the active and the previous vLLM adapters if the server lost them (a restart).

    Returns the names it loaded. Refusals are raised, not recorded: these versions served once.
    """
    vllm_server = server(core.settings.vllm)
    loaded = []
    try:
        for version in await serving_versions(core):
            name = version.model_ref
            if await vllm_server.ensure_adapter(
                name, core.settings.vllm.adapter_path_on_server(name)
            ):
                loaded.append(name)
    except BackendError as error:
        raise BackendUnavailable(f"vLLM did not take the adapters back: {error}") from error
    return loaded


async def serving_versions(core: Core) -> list[ModelVersion]:
    """The vLLM versions that should be loaded: the active one and the one rollback goes to."""
    active = await core.models.active_or_none()
    chosen = [active] if active is not None and active.backend == "vllm" else []
    previous = await core.models.latest_of_backend("vllm", [saved_id(v) for v in chosen])
    return chosen + ([previous] if previous is not None else [])


async def _unload_quietly(vllm_server: VllmServer, name: str) -> None:
    with contextlib.suppress(BackendError):  # it serves nobody: the pointer never moved to it
        await vllm_server.unload_adapter(name)
