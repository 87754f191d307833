"""The vLLM server's adapters around promotion: which versions it should serve (the active one,
and the one rollback goes to), and putting them back after a restart (``waimai vllm load``).

Promotion itself is the holdout gate's (``core.models.gate``): a version's adapter is loaded
under its own new name and asked canary reviews before the gate judges it, so no stale weights
are served, and the adapter it replaces stays loaded, so a rollback is only a pointer switch.
"""

from __future__ import annotations

from core.config import VllmSettings
from core.errors import BackendUnavailable
from core.store.tables import ModelVersion, saved_id
from core.wiring import Core
from serving.base import BackendError
from serving.vllm import VllmServer


def server(vllm: VllmSettings) -> VllmServer:
    api_key = vllm.api_key.get_secret_value() if vllm.api_key else None
    return VllmServer(vllm.base_url, api_key=api_key, timeout_s=vllm.timeout_s)


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
