"""transformers' ``Trainer`` with the loss on the answer's tokens only, the loss curves it logs,
and a callback that reports each optimizer step (for a progress bar).

A training example's labels are IGNORE on the prompt (``lora_sft.encode``), so only the answer
(好评/差评 and the template's end of turn) is scored, in training and in validation alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

import torch
from peft import PeftModel
from transformers import PreTrainedModel, Trainer, TrainerCallback

IGNORE = -100


class CurvePoint(TypedDict):
    step: int
    epoch: float
    loss: float


class LossCurves(TypedDict):
    train: list[CurvePoint]
    validation: list[CurvePoint]


class AnswerOnlyTrainer(Trainer):
    """``Trainer`` with the loss of ``answer_loss``; counts the tokens it trains on."""

    tokens_trained: torch.Tensor | int = 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
        if model.training:
            self.tokens_trained = self.tokens_trained + inputs["attention_mask"].sum()
        loss = answer_loss(
            model,
            inputs["input_ids"],
            inputs["labels"],
            inputs["attention_mask"],
            num_items_in_batch,
        )
        return (loss, {}) if return_outputs else loss


def answer_loss(
    model: torch.nn.Module,
    ids: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    answer_tokens: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Cross-entropy on the answer tokens, with logits computed for those positions only.

    Summed and divided by ``answer_tokens`` (those of every micro-batch of an optimizer step, as
    the Trainer counts them), or averaged over this batch's: so accumulated micro-batches weigh
    each token as one big batch would. The output layer is most of the cost of a small model,
    and of the memory of a large vocabulary; an answer is a few tokens.
    """
    causal_lm = model.get_base_model() if isinstance(model, PeftModel) else model
    assert isinstance(causal_lm, PreTrainedModel)
    decoder = causal_lm.get_decoder()  # type: ignore[no-untyped-call]
    output = causal_lm.get_output_embeddings()  # type: ignore[no-untyped-call]
    assert output is not None
    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != IGNORE
    logits = output(hidden[:, :-1][scored])
    summed = torch.nn.functional.cross_entropy(logits.float(), targets[scored], reduction="sum")
    return summed / (answer_tokens if answer_tokens is not None else scored.sum())


def loss_curves(log_history: list[dict[str, Any]]) -> LossCurves:
    """The train and validation losses of a ``Trainer``'s log, each at its step and epoch."""

    def point(entry: dict[str, Any], loss: str) -> CurvePoint:
        return {
            "step": int(entry["step"]),
            "epoch": round(float(entry["epoch"]), 4),
            "loss": round(float(entry[loss]), 4),
        }

    return {
        "train": [point(entry, "loss") for entry in log_history if "loss" in entry],
        "validation": [point(entry, "eval_loss") for entry in log_history if "eval_loss" in entry],
    }


class StepReporter(TrainerCallback):
    """Calls ``report(step, steps)`` after each optimizer step."""

    def __init__(self, report: Callable[[int, int], None]) -> None:
        self._report = report

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._report(state.global_step, state.max_steps)
