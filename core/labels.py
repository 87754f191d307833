"""Label vocabulary at the edges, and the text normalization used to find the same review."""

from __future__ import annotations

import hashlib
import unicodedata

from core.errors import InvalidInput
from serving.base import Label

_LABEL_WORDS = {
    "positive": Label.POSITIVE,
    "negative": Label.NEGATIVE,
    "好评": Label.POSITIVE,
    "差评": Label.NEGATIVE,
    "1": Label.POSITIVE,
    "0": Label.NEGATIVE,
}


def parse_label(word: str) -> Label:
    """Read a label written as positive/negative, 好评/差评 or 1/0."""
    try:
        return _LABEL_WORDS[word.strip().lower()]
    except KeyError:
        raise InvalidInput(f"unknown label {word!r}: use positive or negative") from None


def normalize_text(text: str) -> str:
    """NFKC, lower case, inner whitespace collapsed: two reviews that read the same match."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def text_hash(text: str) -> str:
    """The sha256 of the normalized text, the key for deduplication and the holdout check."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()
