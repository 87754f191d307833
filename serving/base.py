"""The one interface every backend implements, and the vocabulary it speaks."""

from __future__ import annotations

from collections.abc import Sequence
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


class BackendError(Exception):
    """The backend gave no usable answer: timeout, transport error, or unparseable output."""


class BackendConfigError(BackendError):
    """The backend refuses us as configured (a bad API key, no balance): retrying cannot help."""


@runtime_checkable
class Classifier(Protocol):
    """Classifies a batch of review texts; a batch of one is the common case."""

    @property
    def model_id(self) -> str: ...

    async def classify(self, texts: Sequence[str]) -> list[Verdict]:
        """Return one verdict per text, in order, or raise ``BackendError``.

        Implementations never block the event loop: CPU work runs in a worker thread.
        """
        ...
