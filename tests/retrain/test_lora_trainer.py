"""The LoRA trainer on the tiny Qwen2 model, on the CPU (no vLLM needed here)."""

import asyncio
import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from core.config import Settings
from core.models import registry
from core.store.tables import ModelStatus
from core.wiring import Core
from retrain.snapshot import take_snapshot
from serving.base import Label
from serving.prompt import training_record
from tests.support.tiny_qwen import reviews
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

    from retrain.trainers.answer_only import IGNORE
    from retrain.trainers.lora_sft import encode

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


def test_the_version_keeps_its_train_and_validation_loss_at_each_step_and_epoch(lora_core: Core):
    from retrain.trainers import lora

    snapshot = take_snapshot(lora_core.engine, lora_core.settings.data.dir / "snapshots")
    trained = asyncio.run(lora.train(lora_core, snapshot, max_examples=48))
    metrics = registry.get(lora_core.engine, trained.id or 0).metrics  # as stored, JSON
    assert metrics["validation_examples"] == 6, "a snapshot's share: 1 in 10 of 48 + 6"
    curves = metrics["curves"]
    assert set(curves) == {"train", "validation"}
    for points in curves.values():
        for point in points:
            assert set(point) == {"step", "epoch", "loss"}
            assert type(point["step"]) is int
            assert type(point["epoch"]) is float
            assert type(point["loss"]) is float
            assert point["loss"] > 0
            assert point["epoch"] == pytest.approx(point["step"] / 3, abs=1e-3), "3 steps an epoch"
    train_steps = [point["step"] for point in curves["train"]]
    assert train_steps == list(range(1, 10)), "9 steps, each logged"
    assert metrics["train_loss"] == curves["train"][-1]["loss"]
    validation = curves["validation"]
    assert [point["step"] for point in validation] == list(range(10)), "before step 1, then each"
    assert [point["epoch"] for point in validation if point["step"] % 3 == 0] == [0, 1, 2, 3]
    assert metrics["validation_loss"] == validation[-1]["loss"]
    manifest = json.loads(
        (lora_core.settings.vllm.adapter_dir / trained.model_ref / "manifest.json").read_text()
    )
    assert manifest["curves"] == curves


def test_the_memory_settings_reach_the_trainer():
    from retrain.trainers import lora

    vllm = Settings(
        _env_file=None,
        vllm={"batch_size": 2, "gradient_accumulation_steps": 8, "gradient_checkpointing": True},
    ).vllm
    hyper = lora.hyperparameters(vllm)
    assert (hyper.batch_size, hyper.gradient_accumulation_steps) == (2, 8)
    assert hyper.gradient_checkpointing
    assert not lora.hyperparameters(Settings(_env_file=None).vllm).gradient_checkpointing


def test_accumulated_checkpointed_micro_batches_train_as_one_big_batch_and_lower_the_loss(
    tiny_model: Path, tmp_path: Path
):
    """Batches of 16, and micro-batches of 8 accumulated in pairs with activations recomputed:
    the same optimizer steps, the same losses, the same adapter."""
    from safetensors.torch import load_file

    from retrain.trainers.lora_sft import LoraHyperparameters, train_adapter

    rows = reviews()
    random.Random(3).shuffle(rows)
    train = [training_record(text, Label(label))["messages"] for text, label in rows[:160]]
    seen = train[:40]  # scored on examples it trains on: the loss that training lowers
    big = LoraHyperparameters(
        batch_size=16, dropout=0.0, epochs=2, learning_rate=3e-3, max_seq_len=256
    )
    small = replace(big, batch_size=8, gradient_accumulation_steps=2, gradient_checkpointing=True)

    one = train_adapter(str(tiny_model), train, tmp_path / "big", big, validation=seen)
    two = train_adapter(str(tiny_model), train, tmp_path / "small", small, validation=seen)

    assert (one.steps, two.steps) == (20, 20), "160 examples, 10 steps of 16 an epoch"
    assert (one.effective_batch_size, two.effective_batch_size) == (16, 16)
    assert (one.gradient_checkpointing, two.gradient_checkpointing) == (False, True)
    for curve in ("train", "validation"):
        big_losses, small_losses = ([p["loss"] for p in r.curves[curve]] for r in (one, two))
        assert small_losses == pytest.approx(big_losses, abs=2e-4), curve
    weights = [
        load_file(tmp_path / name / "adapter_model.safetensors") for name in ("big", "small")
    ]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert (tensor - weights[1][name]).abs().max() < 1e-4, name
    losses = [point["loss"] for point in two.curves["validation"]]
    assert losses[-1] < 0.95 * losses[0], losses


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
    steps: list[tuple[int, int]] = []
    report = train_adapter(
        str(tiny_model),
        chats,
        tmp_path / "a",
        hyper,
        validation=chats,
        on_step=lambda step, total: steps.append((step, total)),
    )
    assert (report.examples, report.skipped_too_long, report.steps) == (1, 1, 1)
    assert steps == [(1, 1)], "each optimizer step is reported, for the progress bar"
    assert report.validation_examples == 1
    with pytest.raises(FileExistsError):
        train_adapter(str(tiny_model), chats, tmp_path / "a", hyper)


def test_a_worker_without_the_train_extra_leaves_a_lora_loop_to_the_trainer(
    core: Core, monkeypatch: pytest.MonkeyPatch
):
    """The app image's worker (no torch) and the trainer service share the stack; with
    RETRAIN__BACKEND=lora only the trainer may lead."""
    import importlib.util

    from retrain import worker

    assert worker.missing_trainer("lora") is None, "this environment has the train extra"
    rules = core.settings.retrain.model_copy(update={"backend": "lora", "leader_retry_s": 0.05})
    core.settings = core.settings.model_copy(update={"retrain": rules})
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "peft" else find_spec(name)
    )
    assert worker.missing_trainer("lora") == "RETRAIN__BACKEND=lora needs peft (the trainer image)"
    assert worker.missing_trainer("local") is None

    async def leader_lock_left_free() -> bool:
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run_worker(core, stop))
        await asyncio.sleep(0.5)
        lock = worker.leader_lock(core)
        free = lock.acquire()
        if free:
            lock.release()
        stop.set()
        await running
        return free

    assert asyncio.run(leader_lock_left_free())
