"""Supervised fine-tuning of a LoRA adapter on chat examples (torch, transformers, peft only).

The loss covers the assistant's answer only: each example is rendered with the model's own chat
template twice, without and with the answer, and the prompt's tokens are masked (so it works for
any template). LoRA goes on every linear projection of the attention and MLP blocks (never the
embeddings or the output layer), with no bias, no DoRA, no ``modules_to_save`` and no new tokens:
what vLLM accepts. Runs on CUDA when there is one, else on the CPU.

Nothing here touches the store, so it also runs where only the training stack is installed
(bench/gpu_lora.sh on a GPU machine).
"""

from __future__ import annotations

import json
import math
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

IGNORE = -100
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class LoraHyperparameters:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_seq_len: int = 512
    seed: int = 0


@dataclass(frozen=True)
class TrainingReport:
    examples: int
    skipped_too_long: int
    steps: int
    seconds: float
    steps_per_second: float
    first_loss: float
    last_loss: float
    device: str
    peak_memory_mb: float


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
    start_from: Path | None = None,
    manifest: dict[str, Any] | None = None,
) -> TrainingReport:
    """Fine-tune an adapter on ``chats`` and write it into the new folder ``out_dir``.

    ``start_from`` continues training an earlier adapter (its rank and targets are kept).
    The folder appears whole or not at all.
    """
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists: every adapter version gets a new folder")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(hyper.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else None
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype or torch.float32)
    if start_from is not None:
        model = PeftModel.from_pretrained(base, str(start_from), is_trainable=True)
    else:
        model = get_peft_model(base, _lora_config(hyper, linear_projections(base)))
    model.to(device)

    examples = [encode(tokenizer, chat) for chat in chats]
    kept = [ex for ex in examples if len(ex[0]) <= hyper.max_seq_len]
    if not kept:
        raise ValueError("no training example fits in max_seq_len")
    batches_per_epoch = math.ceil(len(kept) / hyper.batch_size)
    total_steps = max(1, round(batches_per_epoch * hyper.epochs))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=hyper.learning_rate
    )
    warmup = max(1, total_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, (total_steps - step) / max(1, total_steps - warmup)),
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    order = random.Random(hyper.seed)  # noqa: S311 - shuffling examples, not secrets
    losses: list[float] = []
    model.train()
    started = time.perf_counter()
    step = 0
    while step < total_steps:
        shuffled = order.sample(kept, len(kept))
        for start in range(0, len(shuffled), hyper.batch_size):
            if step >= total_steps:
                break
            ids, labels, mask = _pad(shuffled[start : start + hyper.batch_size], pad_id, device)
            loss = answer_loss(model, ids, labels, mask)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    report = TrainingReport(
        examples=len(kept),
        skipped_too_long=len(examples) - len(kept),
        steps=step,
        seconds=round(seconds, 2),
        steps_per_second=round(step / seconds, 2) if seconds else 0.0,
        first_loss=round(losses[0], 4),
        last_loss=round(sum(losses[-10:]) / len(losses[-10:]), 4),
        device=device,
        peak_memory_mb=round(_peak_memory_mb(device), 1),
    )
    _save(model, out_dir, {**(manifest or {}), "base_model": base_model, **asdict(report)})
    return report


def answer_loss(
    model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy on the answer tokens, with logits computed for those positions only.

    The output layer is most of the cost of a small model; an answer is a few tokens.
    """
    causal_lm = model.get_base_model() if isinstance(model, PeftModel) else model
    assert isinstance(causal_lm, PreTrainedModel)
    decoder = causal_lm.get_decoder()  # type: ignore[no-untyped-call]
    output = causal_lm.get_output_embeddings()  # type: ignore[no-untyped-call]
    assert output is not None
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != IGNORE
    logits = output(hidden[:, :-1][scored])
    return torch.nn.functional.cross_entropy(logits.float(), targets[scored])


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


def _pad(
    batch: Sequence[tuple[list[int], list[int]]], pad_id: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = [row + [pad_id] * (width - len(row)) for row, _ in batch]
    labels = [row + [IGNORE] * (width - len(row)) for _, row in batch]
    mask = [[1] * len(row) + [0] * (width - len(row)) for row, _ in batch]
    return (
        torch.tensor(ids, device=device),
        torch.tensor(labels, device=device),
        torch.tensor(mask, device=device),
    )


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
