"""The two answers as the served model writes them, and the confidence read from a completion.

An answer is constrained to a label word exactly as the chat template renders an assistant's
answer. Qwen's template puts the word right after the generation prompt; GLM-4's puts a newline
first, so there the model writes "\\n" and decides at its second token. The confidence is read
at the first token where the two rendered answers differ: the decisive one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from serving.base import BackendError, Label
from serving.prompt import ANSWER_WORDS

TOKEN_ID_PREFIX = "token_id:"  # noqa: S105 - a token of text, not a secret


@dataclass(frozen=True)
class AnswerTokens:
    """Each label's rendered answer (text and token ids), and where the two first differ."""

    texts: dict[Label, str]
    ids: dict[Label, tuple[int, ...]]
    decisive: int

    @classmethod
    def of(cls, texts: dict[Label, str], ids: dict[Label, tuple[int, ...]]) -> AnswerTokens:
        for label, text in texts.items():
            if text.strip() != label.zh:
                raise BackendError(f"the chat template renders the answer {label.zh} as {text!r}")
        positive, negative = ids[Label.POSITIVE], ids[Label.NEGATIVE]
        for position, (a, b) in enumerate(zip(positive, negative, strict=False)):
            if a != b:
                return cls(texts, ids, position)
        raise BackendError(f"the answer words tokenize to nested token ids: {ids}")

    @property
    def choices(self) -> list[str]:
        """What the answer is constrained to: the rendered answers, leading newline and all."""
        return [self.texts[Label.POSITIVE], self.texts[Label.NEGATIVE]]

    @property
    def decisive_ids(self) -> list[int]:
        """The two answers' tokens at the decisive position, whose logprobs are asked for."""
        return [self.ids[Label.POSITIVE][self.decisive], self.ids[Label.NEGATIVE][self.decisive]]

    @property
    def max_tokens(self) -> int:
        return max(len(ids) for ids in self.ids.values()) + 1

    def label_of(self, content: str | None) -> Label:
        word = (content or "").strip()
        if word not in ANSWER_WORDS:
            raise BackendError(f"vLLM answered {content!r}, not one of {self.choices}")
        return Label.from_zh(word)


def token_id(token: str) -> int:
    if not token.startswith(TOKEN_ID_PREFIX):
        raise BackendError(f"vLLM did not return token ids in its logprobs: {token!r}")
    return int(token.removeprefix(TOKEN_ID_PREFIX))


def confidence(answers: AnswerTokens, label: Label, steps: list[dict[str, Any]]) -> float | None:
    """p(label) / (p(label) + p(other label)) at the decisive position, from its logprobs.

    The server lists the two answers' tokens there when asked (``logprob_token_ids``): the ratio
    is exact. A server without that lists its top tokens; the other answer's token, if not among
    them, is bounded by the smallest listed. None if the answer was spelled with other tokens
    than the rendered answer's, up to and including the decisive one.
    """
    k = answers.decisive
    if len(steps) <= k:
        return None
    try:
        spelled = tuple(token_id(step["token"]) for step in steps[: k + 1])
        chosen_logprob = float(steps[k]["logprob"])
        listed = {
            token_id(entry["token"]): float(entry["logprob"])
            for entry in steps[k].get("top_logprobs") or []
        }
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BackendError(f"vLLM sent logprobs in an unknown shape: {steps!r}") from error
    if spelled != answers.ids[label][: k + 1] or not math.isfinite(chosen_logprob):
        return None
    other_token = answers.ids[Label(1 - label)][k]
    other_logprob = listed.get(other_token, min([chosen_logprob, *listed.values()]))
    other_p = math.exp(other_logprob - chosen_logprob) if math.isfinite(other_logprob) else 0.0
    return 1.0 / (1.0 + other_p)
