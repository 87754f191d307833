"""Train a LoRA adapter for the vLLM backend on a snapshot and record it as a candidate.

The training itself is ``retrain.trainers.lora_sft``; this module picks the base model and the
hyperparameters from the settings, writes each version to a new folder ``<adapter dir>/<name>/``,
and registers it (backend ``vllm``, model_ref = the adapter's name, the snapshot's hash).
Needs the ``train`` extra (torch, transformers, peft).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path

from core.config import VllmSettings
from core.models import registry
from core.store.tables import ModelVersion, Snapshot
from core.wiring import Core
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
        max_seq_len=vllm.max_seq_len,
    )


async def train(
    core: Core,
    snapshot: Snapshot,
    *,
    incremental: bool = False,
    max_examples: int | None = None,
    hyper: LoraHyperparameters | None = None,
) -> ModelVersion:
    """Train an adapter on ``snapshot``'s train.jsonl and record it as a vLLM candidate.

    ``incremental`` starts from the newest promoted vLLM adapter, if there is one.
    """
    vllm = core.settings.vllm
    hyper = hyper or hyperparameters(vllm)
    start_from = None
    if incremental:
        previous = await asyncio.to_thread(registry.latest_of_backend, core.engine, "vllm")
        if previous is not None and (vllm.adapter_dir / previous.model_ref).is_dir():
            start_from = vllm.adapter_dir / previous.model_ref
    chats = await asyncio.to_thread(
        read_chats, Path(snapshot.directory) / "train.jsonl", max_examples
    )
    name = f"waimai-{new_version_name(snapshot.content_hash)}"
    report = await asyncio.to_thread(
        train_adapter,
        vllm.base_model,
        chats,
        vllm.adapter_dir / name,
        hyper,
        start_from=start_from,
        manifest={"snapshot": snapshot.content_hash, "hyperparameters": asdict(hyper)},
    )
    started_from = f", continued from {start_from.name}" if start_from else ""
    return await asyncio.to_thread(
        registry.register,
        core.engine,
        backend="vllm",
        model_ref=name,
        metrics={
            "train_seconds": report.seconds,
            "train_steps": report.steps,
            "train_loss": report.last_loss,
            "examples": report.examples,
        },
        snapshot=snapshot.content_hash,
        note=(
            f"LoRA r={hyper.rank} on {vllm.base_model}: {report.examples} examples, "
            f"{report.steps} steps in {report.seconds:.0f}s on {report.device}{started_from}"
        ),
    )
