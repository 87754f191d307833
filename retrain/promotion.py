"""Hot-swap a LoRA adapter into the running vLLM server, then make it the active version.

1. Load the version's folder under its own new name (``POST /v1/load_lora_adapter``); a name is
   never reused, so no stale weights are served.
2. Ask it a few canary reviews through the same classifier the service uses.
3. Switch the active pointer in the store, in one transaction (``registry.promote``).

The adapter it replaces stays loaded, so ``waimai models rollback`` is only a pointer switch. An
adapter the server refuses (a missing folder, a rank above ``--max-lora-rank``) or that cannot
answer the canaries is rejected with the server's reason; the active one keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib

from core.config import VllmSettings
from core.errors import BackendUnavailable, Conflict
from core.models import registry
from core.store.tables import ModelStatus, ModelVersion
from core.wiring import Core
from serving.base import BackendError, Verdict
from serving.vllm import VllmRefused, VllmServer

CANARY_REVIEWS = (
    "很快，好吃，味道足，量大",
    "送餐太慢了，菜都凉了，再也不点了",
    "味道不错，分量足，还会再点",
    "等了两个小时，饭是冷的",
)


def server(vllm: VllmSettings) -> VllmServer:
    api_key = vllm.api_key.get_secret_value() if vllm.api_key else None
    return VllmServer(vllm.base_url, api_key=api_key, timeout_s=vllm.timeout_s)


def adapter_path_on_server(vllm: VllmSettings, name: str) -> str:
    """The version's folder as the server sees it."""
    if vllm.server_adapter_dir:
        return f"{vllm.server_adapter_dir.rstrip('/')}/{name}"
    return str((vllm.adapter_dir / name).resolve())


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
            await vllm_server.load_adapter(name, adapter_path_on_server(vllm, name))
            loaded_now = True
        return await core.backends.for_version(version).classify(CANARY_REVIEWS)
    except BackendError as error:
        if loaded_now:
            reason = f"adapter {name} loaded but failed the canary reviews: {error}"
        elif isinstance(error, VllmRefused) and name not in listed:
            reason = f"vLLM refused adapter {name}: {error}"
        else:
            raise BackendUnavailable(f"vLLM could not be asked about {name}: {error}") from error
    if loaded_now:
        await _unload_quietly(vllm_server, name)
    await asyncio.to_thread(_reject, core, version, reason)
    raise BackendUnavailable(reason, code="adapter_refused")


async def promote_adapter(core: Core, version_id: int, note: str = "") -> ModelVersion:
    """Load, canary, then make ``version_id`` active; the previous adapter stays loaded."""
    version = await asyncio.to_thread(registry.get, core.engine, version_id)
    if version.status in (ModelStatus.ACTIVE, ModelStatus.REJECTED):
        raise Conflict(f"model version {version_id} is {version.status}")
    verdicts = await load_candidate(core, version)
    summary = ", ".join(f"{v.label.zh} {v.confidence or 0:.2f}" for v in verdicts)
    note = note or f"hot-swapped into vLLM; canaries: {summary}"
    return await asyncio.to_thread(registry.promote, core.engine, version_id, note)


async def ensure_serving(core: Core) -> list[str]:
    """Load the active and the previous vLLM adapters if the server lost them (a restart).

    Returns the names it loaded. Refusals are raised, not recorded: these versions served once.
    """
    vllm_server = server(core.settings.vllm)
    loaded = []
    try:
        listed = set(await vllm_server.models())
        for version in await asyncio.to_thread(serving_versions, core):
            if version.model_ref not in listed:
                path = adapter_path_on_server(core.settings.vllm, version.model_ref)
                await vllm_server.load_adapter(version.model_ref, path)
                loaded.append(version.model_ref)
    except BackendError as error:
        raise BackendUnavailable(f"vLLM did not take the adapters back: {error}") from error
    return loaded


def serving_versions(core: Core) -> list[ModelVersion]:
    """The vLLM versions that should be loaded: the active one and the one rollback goes to."""
    active = registry.active_or_none(core.engine)
    chosen = [active] if active is not None and active.backend == "vllm" else []
    previous = registry.latest_of_backend(
        core.engine, "vllm", [v.id for v in chosen if v.id is not None]
    )
    return chosen + ([previous] if previous is not None else [])


def _reject(core: Core, version: ModelVersion, reason: str) -> None:
    assert version.id is not None
    if version.status == ModelStatus.CANDIDATE:
        registry.decide(core.engine, version.id, False, reason, version.metrics)


async def _unload_quietly(vllm_server: VllmServer, name: str) -> None:
    with contextlib.suppress(BackendError):  # it serves nobody: the pointer never moved to it
        await vllm_server.unload_adapter(name)
