"""Label vocabulary at the edges: the words people and platforms write a label with."""

from __future__ import annotations

from core.errors import InvalidInput
from serving.base import Label

_LABEL_WORDS = {
    word: label for label in Label for word in (label.api_name, label.zh, str(int(label)))
}


def parse_label(word: str) -> Label:
    """Read a label written as positive/negative, 好评/差评 or 1/0."""
    try:
        return _LABEL_WORDS[word.strip().lower()]
    except KeyError:
        raise InvalidInput(f"unknown label {word!r}: use positive or negative") from None
