"""The one interface every backend implements, and the vocabulary it speaks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, runtime_checkable


class Label(IntEnum):
    """A review's class. The integer values are the dataset's: 1 = 好评, 0 = 差评."""

    NEGATIVE = 0
    POSITIVE = 1

    @property
    def zh(self) -> str:
        return "好评" if self is Label.POSITIVE else "差评"

    @property
    def api_name(self) -> str:
        return "positive" if self is Label.POSITIVE else "negative"

    @classmethod
    def from_zh(cls, word: str) -> Label:
        return {"好评": cls.POSITIVE, "差评": cls.NEGATIVE}[word]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One classification. ``confidence`` is the probability of ``label``, or None if unknown."""

    label: Label
    confidence: float | None
    model_id: str


@dataclass(frozen=True, slots=True)
class Declined:
    """The backend would not judge this one text (a content filter); the rest of its batch stands.

    Whoever serves the review asks the next backend in the chain for this text alone."""

    reason: str
    model_id: str


Answer = Verdict | Declined


class BackendError(Exception):
    """The backend gave no usable answer: timeout, transport error, or unparseable output."""


class BackendConfigError(BackendError):
    """The backend refuses us as configured (a bad API key, no balance): retrying cannot help."""


@runtime_checkable
class Classifier(Protocol):
    """Classifies a batch of review texts; a batch of one is the common case."""

    @property
    def model_id(self) -> str: ...

    async def classify(self, texts: Sequence[str]) -> Sequence[Answer]:
        """Return one answer per text, in order, or raise ``BackendError`` for the whole batch.

        Implementations never block the event loop: CPU work runs in a worker thread.
        """
        ...

    async def probe(self) -> None:
        """Raise ``BackendError`` if this backend cannot answer now (``BackendConfigError`` when
        only its configuration can fix that). Cheap; repairs what it can (a lost adapter)."""
        ...


@runtime_checkable
class BulkClassifier(Protocol):
    """A backend that also takes a large set of texts at once, slower and cheaper (an offline
    batch job); evaluation uses it for the holdout and falls back to ``classify``."""

    async def classify_bulk(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> Sequence[Answer]: ...
