"""What makes two reviews the same text: the normalization and its hash."""

from __future__ import annotations

import hashlib
import unicodedata


def normalize_text(text: str) -> str:
    """NFKC, lower case, inner whitespace collapsed: two reviews that read the same match."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def text_hash(text: str) -> str:
    """The sha256 of the normalized text, the key for deduplication and the holdout check."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()
