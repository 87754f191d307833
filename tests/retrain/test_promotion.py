"""Hot-swapping LoRA adapters into a real vLLM server (CPU): promote, traffic, rollback, refusal."""

import asyncio
import time
from dataclasses import replace

import pytest

from core.classify.service import ReviewInput
from core.errors import BackendUnavailable
from core.models import registry
from core.store.tables import ClientRole, ModelStatus, Source
from core.wiring import Core
from retrain import promotion
from retrain.snapshot import take_snapshot
from serving.vllm import VllmServer
from tests.support.vllm_fixtures import LoraStore
from tests.support.vllm_server import VllmProcess

pytestmark = pytest.mark.slow

REVIEWS = [ReviewInput("味道很好，送得也快"), ReviewInput("太咸了，不会再点")]


def answered_by(core: Core) -> set[str]:
    classified = asyncio.run(core.classification.classify(REVIEWS, source=Source.API))
    assert not any(c.fallback for c in classified)
    return {c.verdict.model_id for c in classified}


def listed(server: VllmProcess) -> list[str]:
    return asyncio.run(VllmServer(server.base_url).models())


def test_a_second_adapter_is_hot_swapped_in_promoted_and_rolled_back(
    vllm_core: Core, vllm_server: VllmProcess, lora_store: LoraStore
):
    from retrain.trainers import lora

    first = lora_store.first
    asyncio.run(vllm_core.gate.promote(first.id or 0, by="test", force=True))
    assert answered_by(vllm_core) == {f"vllm:{first.model_ref}"}

    snapshot = take_snapshot(vllm_core.engine, lora_store.root / "snapshots")
    assert snapshot.content_hash == first.snapshot, "the same data as the first adapter"
    hyper = replace(lora.hyperparameters(vllm_core.settings.vllm), epochs=1)
    second = asyncio.run(lora.train(vllm_core, snapshot, max_examples=500, hyper=hyper))
    assert second.model_ref not in listed(vllm_server)

    promoted = asyncio.run(vllm_core.gate.promote(second.id or 0, by="test", force=True))
    assert promoted.status == ModelStatus.ACTIVE
    assert promoted.metrics["forced"]["by"] == "test"
    assert {first.model_ref, second.model_ref} <= set(listed(vllm_server))
    assert answered_by(vllm_core) == {f"vllm:{second.model_ref}"}
    assert registry.get(vllm_core.engine, first.id or 0).status == ModelStatus.RETIRED

    started = time.perf_counter()
    back = registry.rollback(vllm_core.engine)
    assert time.perf_counter() - started < 1.0, "rollback is a pointer switch"
    assert back.id == first.id
    assert answered_by(vllm_core) == {f"vllm:{first.model_ref}"}
    assert [v.model_ref for v in asyncio.run(promotion.serving_versions(vllm_core))] == [
        first.model_ref,
        second.model_ref,
    ]


def test_an_adapter_vllm_refuses_is_rejected_and_the_old_one_keeps_serving(
    vllm_core: Core, vllm_server: VllmProcess, lora_store: LoraStore
):
    from retrain.trainers import lora

    first = lora_store.first
    asyncio.run(vllm_core.gate.promote(first.id or 0, by="test", force=True))
    snapshot = take_snapshot(vllm_core.engine, lora_store.root / "snapshots")
    # The server allows rank 8 at most.
    too_big = replace(lora.hyperparameters(vllm_core.settings.vllm), rank=16)
    rank16 = asyncio.run(lora.train(vllm_core, snapshot, max_examples=8, hyper=too_big))
    missing = registry.register(
        vllm_core.engine, backend="vllm", model_ref="waimai-never-trained", metrics={}
    )

    for version, why in ((rank16, "rank"), (missing, "waimai-never-trained")):
        with pytest.raises(BackendUnavailable) as refused:
            asyncio.run(vllm_core.gate.promote(version.id or 0, by="test", force=True))
        assert refused.value.code == "adapter_refused"
        assert why in refused.value.message
        recorded = registry.get(vllm_core.engine, version.id or 0)
        assert recorded.status == ModelStatus.REJECTED
        assert why in recorded.note
        assert version.model_ref not in listed(vllm_server)
        assert registry.active(vllm_core.engine).id == first.id
        assert answered_by(vllm_core) == {f"vllm:{first.model_ref}"}


def test_a_server_that_is_down_changes_nothing(vllm_core: Core, lora_store: LoraStore):
    vllm_core.settings.vllm.base_url = "http://127.0.0.1:9"
    with pytest.raises(BackendUnavailable, match="could not be asked"):
        asyncio.run(vllm_core.gate.promote(lora_store.first.id or 0, by="test", force=True))
    assert registry.get(vllm_core.engine, lora_store.first.id or 0).status == ModelStatus.CANDIDATE
    assert registry.active(vllm_core.engine).backend == "local"


async def test_a_version_promoted_through_the_api_is_loaded_and_answers_the_canaries_first(
    vllm_core: Core, vllm_server: VllmProcess, lora_store: LoraStore
):
    from api.main import create_app
    from tests.api.conftest import client_for, issue

    first = lora_store.first
    await VllmServer(vllm_server.base_url).unload_adapter(first.model_ref)
    assert first.model_ref not in await VllmServer(vllm_server.base_url).models()
    root = issue(vllm_core, "root", ClientRole.ADMIN)
    missing = registry.register(
        vllm_core.engine, backend="vllm", model_ref="waimai-never-trained", metrics={}
    )
    async with client_for(create_app(vllm_core)) as http:
        refused = await http.post(
            f"/v1/models/{missing.id}/promote", json={"force": True}, headers=root.headers
        )
        promoted = await http.post(
            f"/v1/models/{first.id}/promote", json={"force": True}, headers=root.headers
        )
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "adapter_refused"
    assert registry.get(vllm_core.engine, missing.id or 0).status == ModelStatus.REJECTED
    assert promoted.status_code == 200, promoted.text
    assert first.model_ref in await VllmServer(vllm_server.base_url).models()
    assert registry.active(vllm_core.engine).id == first.id
