"""The prompt and answer words shared by training data and every LLM backend."""

from __future__ import annotations

from typing import Any

from serving.base import Label

SYSTEM_PROMPT = "你是一位外卖评论好评差评评论专家。"
ANSWER_WORDS = (Label.POSITIVE.zh, Label.NEGATIVE.zh)


def chat_messages(review: str) -> list[dict[str, str]]:
    """The messages sent to an LLM to classify one review."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": review},
    ]


def training_record(review: str, label: Label) -> dict[str, Any]:
    """One line of the chat-format training JSONL."""
    return {"messages": [*chat_messages(review), {"role": "assistant", "content": label.zh}]}
