"""Train a LoRA adapter for the vLLM backend on a snapshot and record it as a candidate.

The training itself is ``retrain.trainers.lora_sft``; this module picks the base model and the
hyperparameters from the settings, writes each version to a new folder ``<adapter dir>/<name>/``,
and registers it (backend ``vllm``, model_ref = the adapter's name, the snapshot's hash) with its
train and validation loss curves in ``metrics["curves"]``. Needs the ``train`` extra (torch,
transformers, peft): the ``trainer`` image of docker/Dockerfile.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from core.config import VllmSettings
from core.store.tables import ModelVersion, Snapshot
from core.wiring import Core
from retrain.snapshot import VALIDATION_SHARE
from retrain.trainers.local import new_version_name
from retrain.trainers.lora_sft import LoraHyperparameters, read_chats, train_adapter


def hyperparameters(vllm: VllmSettings) -> LoraHyperparameters:
    return LoraHyperparameters(
        rank=vllm.lora_rank,
        alpha=vllm.lora_alpha,
        dropout=vllm.lora_dropout,
        epochs=vllm.epochs,
        learning_rate=vllm.learning_rate,
        batch_size=vllm.batch_size,
        gradient_accumulation_steps=vllm.gradient_accumulation_steps,
        gradient_checkpointing=vllm.gradient_checkpointing,
        max_seq_len=vllm.max_seq_len,
    )


async def train(
    core: Core,
    snapshot: Snapshot,
    *,
    incremental: bool = False,
    max_examples: int | None = None,
    hyper: LoraHyperparameters | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> ModelVersion:
    """Train an adapter on ``snapshot``'s train.jsonl, scored on its validation.jsonl, and
    record it as a vLLM candidate.

    ``incremental`` starts from the newest promoted vLLM adapter, if there is one.
    ``max_examples`` trains on the first N examples and scores on the snapshot's share of that.
    """
    vllm = core.settings.vllm
    hyper = hyper or hyperparameters(vllm)
    start_from = None
    if incremental:
        previous = await core.models.latest_of_backend("vllm")
        if previous is not None and (vllm.adapter_dir / previous.model_ref).is_dir():
            start_from = vllm.adapter_dir / previous.model_ref
    directory = Path(snapshot.directory)
    chats = await asyncio.to_thread(read_chats, directory / "train.jsonl", max_examples)
    validation = await asyncio.to_thread(
        read_chats, directory / "validation.jsonl", _validation_share(max_examples)
    )
    name = f"waimai-{new_version_name(snapshot.content_hash)}"
    report = await asyncio.to_thread(
        train_adapter,
        vllm.base_model,
        chats,
        vllm.adapter_dir / name,
        hyper,
        validation=validation,
        start_from=start_from,
        manifest={"snapshot": snapshot.content_hash, "hyperparameters": asdict(hyper)},
        on_step=on_step,
    )
    started_from = f", continued from {start_from.name}" if start_from else ""
    return await core.models.register(
        backend="vllm",
        model_ref=name,
        metrics={
            "train_seconds": report.seconds,
            "train_steps": report.steps,
            "train_loss": report.last_loss,
            "validation_loss": report.validation_loss,
            "examples": report.examples,
            "validation_examples": report.validation_examples,
            "effective_batch_size": report.effective_batch_size,
            "curves": report.curves,
        },
        snapshot=snapshot.content_hash,
        note=(
            f"LoRA r={hyper.rank} on {vllm.base_model}: {report.examples} examples, "
            f"{report.steps} steps in {report.seconds:.0f}s on {report.device}{started_from}"
        ),
    )


def _validation_share(train_examples: int | None) -> int | None:
    """As many validation examples for ``train_examples`` as a snapshot holds (None: all)."""
    if train_examples is None:
        return None
    return math.ceil(train_examples * VALIDATION_SHARE / (1 - VALIDATION_SHARE))
