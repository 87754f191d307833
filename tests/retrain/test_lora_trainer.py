"""The LoRA trainer on the tiny Qwen2 model, on the CPU (no vLLM needed here)."""

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from core.models import registry
from core.store.tables import ModelStatus
from core.wiring import Core
from retrain.snapshot import take_snapshot
from serving.base import Label
from serving.prompt import training_record
from tests.support.vllm_fixtures import LoraStore, vllm_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def lora_core(core: Core, tiny_model: Path, tmp_path: Path) -> Core:
    core.settings = core.settings.model_copy(
        update={"vllm": vllm_settings(tiny_model, tmp_path / "lora")}
    )
    return core


def test_the_loss_covers_the_answer_and_nothing_before_it(tiny_model: Path):
    from transformers import AutoTokenizer

    from retrain.trainers.lora_sft import IGNORE, encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = training_record("送餐太慢了，菜都凉了", Label.NEGATIVE)["messages"]
    ids, labels = encode(tokenizer, messages)
    scored = [token for token, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert str(tokenizer.decode(scored)).startswith("差评<|im_end|>")
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    assert isinstance(prompt, str)
    masked = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:masked] == [IGNORE] * masked
    assert IGNORE not in labels[masked:]


def test_an_adapter_is_a_new_candidate_in_a_form_vllm_accepts(lora_core: Core):
    from retrain.trainers import lora

    snapshot = take_snapshot(lora_core.engine, lora_core.settings.data.dir / "snapshots")
    version = asyncio.run(lora.train(lora_core, snapshot, max_examples=48))
    assert (version.backend, version.status) == ("vllm", ModelStatus.CANDIDATE)
    assert version.snapshot == snapshot.content_hash
    assert version.metrics["train_steps"] == 3 * 3, "48 examples in batches of 16, 3 epochs"
    folder = lora_core.settings.vllm.adapter_dir / version.model_ref
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert config["bias"] == "none"
    assert not config["use_dora"]
    assert not config["modules_to_save"]
    assert sorted(config["target_modules"]) == [
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"
    ]  # fmt: skip
    assert (folder / "adapter_model.safetensors").stat().st_size > 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["snapshot"] == snapshot.content_hash
    assert manifest["device"] == "cpu"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_incremental_training_continues_the_active_adapter_in_a_new_folder(
    lora_core: Core, lora_store: LoraStore
):
    from retrain.trainers import lora

    adapter_dir = lora_core.settings.vllm.adapter_dir
    first = lora_store.first
    shutil.copytree(lora_store.adapter_dir / first.model_ref, adapter_dir / first.model_ref)
    registered = registry.register(
        lora_core.engine, backend="vllm", model_ref=first.model_ref, metrics={}
    )
    registry.promote(lora_core.engine, registered.id or 0)
    before = (adapter_dir / first.model_ref / "adapter_model.safetensors").read_bytes()

    snapshot = take_snapshot(lora_core.engine, lora_core.settings.data.dir / "snapshots")
    second = asyncio.run(lora.train(lora_core, snapshot, incremental=True, max_examples=16))
    assert f"continued from {first.model_ref}" in second.note
    assert second.model_ref != first.model_ref
    assert (adapter_dir / second.model_ref / "adapter_model.safetensors").is_file()
    assert (adapter_dir / first.model_ref / "adapter_model.safetensors").read_bytes() == before


def test_examples_longer_than_the_limit_are_skipped_and_an_existing_folder_is_refused(
    tiny_model: Path, tmp_path: Path
):
    from retrain.trainers.lora_sft import LoraHyperparameters, train_adapter

    chats = [
        training_record("好吃", Label.POSITIVE)["messages"],
        training_record("太难吃了" * 40, Label.NEGATIVE)["messages"],
    ]
    hyper = LoraHyperparameters(max_seq_len=64, batch_size=2)
    report = train_adapter(str(tiny_model), chats, tmp_path / "a", hyper)
    assert (report.examples, report.skipped_too_long, report.steps) == (1, 1, 1)
    with pytest.raises(FileExistsError):
        train_adapter(str(tiny_model), chats, tmp_path / "a", hyper)
