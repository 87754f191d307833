"""Supervised fine-tuning of a LoRA adapter on chat examples (torch, transformers, peft only).

The loss covers the assistant's answer only: each example is rendered with the model's own chat
template twice, without and with the answer, and the prompt's tokens are masked (so it works for
any template; TRL's ``assistant_only_loss`` needs ``{% generation %}`` markers that few templates
ship, Qwen2.5's not among them). LoRA goes on every linear projection of the attention and MLP
blocks (never the embeddings or the output layer), with no bias, no DoRA, no ``modules_to_save``
and no new tokens: what vLLM accepts. Runs on one CUDA GPU when there is one, else on the CPU.

The loop is transformers' ``Trainer`` (``answer_only.AnswerOnlyTrainer``): micro-batches of
``batch_size`` accumulate into one optimizer step (``gradient_accumulation_steps``), activation
(gradient) checkpointing recomputes each block in the backward pass instead of keeping its
activations, and the validation chats are scored before the first step, a few times an epoch and
after the last. Those two settings and bf16 weights are what should let a 7–9B base train on a
24–48 GB GPU; bench/gpu_lora.sh measures it.

Nothing here touches the store, so it also runs where only the training stack is installed
(bench/gpu_lora.sh on a GPU machine). Past 300 lines: one training run, from chats to a saved
adapter and its report, reads best in one place."""

from __future__ import annotations

import json
import math
import resource
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback

from retrain.trainers.answer_only import (
    IGNORE,
    AnswerOnlyTrainer,
    LossCurves,
    StepReporter,
    loss_curves,
)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VALIDATIONS_PER_EPOCH = 4
MAX_TRAIN_POINTS = 200
"""The train loss is logged at most this often over a run (each point averages the steps since
the one before), so that a version's curves stay a few kilobytes however long it trained."""


@dataclass(frozen=True)
class LoraHyperparameters:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    """Examples per forward pass (a micro-batch)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step: the effective batch is ``batch_size`` times this."""
    gradient_checkpointing: bool = False
    max_seq_len: int = 512
    seed: int = 0


@dataclass(frozen=True)
class TrainingReport:
    examples: int
    skipped_too_long: int
    validation_examples: int
    steps: int
    """Optimizer steps."""
    effective_batch_size: int
    gradient_checkpointing: bool
    """As the model reported it while training."""
    seconds: float
    """Training alone, without the validation passes."""
    steps_per_second: float
    tokens_per_second: float
    first_loss: float
    last_loss: float
    validation_loss: float | None
    device: str
    peak_memory_mb: float
    curves: LossCurves


def encode(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]
) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat, and labels that are IGNORE on everything before the answer."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a training example must end with the assistant's answer")
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert isinstance(prompt, str)
    assert isinstance(full, str)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently once answered")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def read_chats(path: Path, limit: int | None = None) -> list[list[dict[str, str]]]:
    chats = []
    with path.open(encoding="utf-8") as file:
        for line in file:
            if line.strip():
                chats.append(json.loads(line)["messages"])
            if limit is not None and len(chats) >= limit:
                break
    return chats


def train_adapter(
    base_model: str,
    chats: Sequence[list[dict[str, str]]],
    out_dir: Path,
    hyper: LoraHyperparameters,
    *,
    validation: Sequence[list[dict[str, str]]] = (),
    start_from: Path | None = None,
    manifest: dict[str, Any] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainingReport:
    """Fine-tune an adapter on ``chats``, scored on ``validation``, into the new folder ``out_dir``.

    ``start_from`` continues training an earlier adapter (its rank and targets are kept);
    ``on_step(step, steps)`` hears of each optimizer step.
    The folder appears whole or not at all.
    """
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists: every adapter version gets a new folder")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.cuda.device_count() > 1:
        raise ValueError(
            f"the LoRA trainer runs on one GPU and sees {torch.cuda.device_count()}: "
            "choose one with CUDA_VISIBLE_DEVICES"
        )
    torch.manual_seed(hyper.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    base = AutoModelForCausalLM.from_pretrained(
        base_model, dtype=torch.bfloat16 if _bf16(device) else torch.float32
    )
    if start_from is not None:
        model = PeftModel.from_pretrained(base, str(start_from), is_trainable=True)
    else:
        model = get_peft_model(base, _lora_config(hyper, linear_projections(base)))

    train_set = _fitting(tokenizer, chats, hyper.max_seq_len)
    if not train_set:
        raise ValueError("no training example fits in max_seq_len")
    validation_set = _fitting(tokenizer, validation, hyper.max_seq_len)
    with tempfile.TemporaryDirectory(prefix="lora-trainer-") as scratch:
        trainer = AnswerOnlyTrainer(
            model=model,
            args=_arguments(
                hyper, scratch, len(train_set), validating=bool(validation_set), device=device
            ),
            train_dataset=train_set,
            eval_dataset=validation_set or None,
            data_collator=partial(_pad, pad_id=pad_id),
        )
        trainer.remove_callback(PrinterCallback)
        if on_step is not None:
            trainer.add_callback(StepReporter(on_step))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        checkpointed = base.is_activation_checkpointing
        if device == "cuda":
            torch.cuda.synchronize()
    history = trainer.state.log_history
    curves = loss_curves(history)
    runtime = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
    seconds = runtime - sum(entry.get("eval_runtime", 0.0) for entry in history)
    steps = trainer.state.global_step
    report = TrainingReport(
        examples=len(train_set),
        skipped_too_long=len(chats) - len(train_set),
        validation_examples=len(validation_set),
        steps=steps,
        effective_batch_size=hyper.batch_size * hyper.gradient_accumulation_steps,
        gradient_checkpointing=checkpointed,
        seconds=round(seconds, 2),
        steps_per_second=round(steps / seconds, 2) if seconds > 0 else 0.0,
        tokens_per_second=round(int(trainer.tokens_trained) / seconds, 1) if seconds > 0 else 0.0,
        first_loss=curves["train"][0]["loss"],
        last_loss=curves["train"][-1]["loss"],
        validation_loss=curves["validation"][-1]["loss"] if curves["validation"] else None,
        device=device,
        peak_memory_mb=round(_peak_memory_mb(device), 1),
        curves=curves,
    )
    _save(model, out_dir, {**(manifest or {}), "base_model": base_model, **asdict(report)})
    return report


def linear_projections(model: PreTrainedModel) -> list[str]:
    """The names of the linear layers inside the blocks (attention and MLP), never the output."""
    output = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not output
        }
    )


def steps_per_epoch(examples: int, hyper: LoraHyperparameters) -> int:
    """Optimizer steps in an epoch: its micro-batches, in groups of ``gradient_accumulation_steps``
    (the last group may be smaller)."""
    micro_batches = math.ceil(examples / hyper.batch_size)
    return math.ceil(micro_batches / hyper.gradient_accumulation_steps)


def _arguments(
    hyper: LoraHyperparameters, scratch: str, examples: int, *, validating: bool, device: str
) -> TrainingArguments:
    per_epoch = steps_per_epoch(examples, hyper)
    steps = max(1, math.ceil(per_epoch * hyper.epochs))
    return TrainingArguments(
        output_dir=scratch,
        max_steps=steps,
        per_device_train_batch_size=hyper.batch_size,
        per_device_eval_batch_size=hyper.batch_size,
        gradient_accumulation_steps=hyper.gradient_accumulation_steps,
        activation_checkpointing=hyper.gradient_checkpointing,
        learning_rate=hyper.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=max(1, steps // 20),
        bf16=_bf16(device),
        seed=hyper.seed,
        logging_strategy="steps",
        logging_steps=max(1, math.ceil(steps / MAX_TRAIN_POINTS)),
        logging_first_step=True,
        eval_strategy="steps" if validating else "no",
        eval_steps=max(1, math.ceil(per_epoch / VALIDATIONS_PER_EPOCH)),
        eval_on_start=validating,
        prediction_loss_only=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_pin_memory=device == "cuda",
    )


def _fitting(
    tokenizer: PreTrainedTokenizerBase, chats: Sequence[list[dict[str, str]]], max_seq_len: int
) -> list[dict[str, list[int]]]:
    """The encoded chats that fit in ``max_seq_len`` tokens."""
    encoded = (encode(tokenizer, chat) for chat in chats)
    return [
        {"input_ids": ids, "labels": labels} for ids, labels in encoded if len(ids) <= max_seq_len
    ]


def _lora_config(hyper: LoraHyperparameters, targets: list[str]) -> LoraConfig:
    return LoraConfig(
        r=hyper.rank,
        lora_alpha=hyper.alpha,
        lora_dropout=hyper.dropout,
        target_modules=targets,
        bias="none",
        use_dora=False,
        task_type="CAUSAL_LM",
    )


def _pad(batch: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(example["input_ids"]) for example in batch)

    def padded(row: list[int], value: int) -> list[int]:
        return row + [value] * (width - len(row))

    return {
        "input_ids": torch.tensor([padded(ex["input_ids"], pad_id) for ex in batch]),
        "labels": torch.tensor([padded(ex["labels"], IGNORE) for ex in batch]),
        "attention_mask": torch.tensor([padded([1] * len(ex["input_ids"]), 0) for ex in batch]),
    }


def _bf16(device: str) -> bool:
    return device == "cuda" and torch.cuda.is_bf16_supported()


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _save(model: PeftModel, out_dir: Path, manifest: dict[str, Any]) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(str(staging))
        missing = [name for name in ADAPTER_FILES if not (staging / name).is_file()]
        if missing:
            raise RuntimeError(f"peft wrote no {', '.join(missing)}")
        (staging / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2))
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
