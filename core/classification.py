"""Classify reviews: validate, run the active model, fall back along the chain, record it all."""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core import registry
from core.config import ServingSettings
from core.db import unit_of_work
from core.errors import BackendUnavailable, InvalidInput
from core.labels import text_hash
from core.tables import ModelVersion, Prediction, Review, Source, saved_id
from serving.base import BackendError, Classifier, Verdict

log = logging.getLogger(__name__)


class VersionLoader(Protocol):
    def for_version(self, version: ModelVersion) -> Classifier: ...


@dataclass(frozen=True)
class ReviewInput:
    text: str
    external_id: str | None = None
    merchant_id: str | None = None


@dataclass(frozen=True)
class Classified:
    """One stored review and the prediction made for it."""

    review_id: int
    prediction_id: int
    text: str
    verdict: Verdict
    model_version_id: int
    backend: str
    fallback: bool


def clean_text(text: str, index: int, max_chars: int) -> str:
    """The review text stripped, or InvalidInput naming the review and what is wrong."""
    where = f"reviews[{index}].text"
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(f"{where} is empty")
    if len(stripped) > max_chars:
        raise InvalidInput(
            f"{where} has {len(stripped)} characters; at most {max_chars} are allowed"
        )
    if "\x00" in stripped or "\ufffd" in stripped:
        raise InvalidInput(f"{where} looks like binary data, not a review")
    if all(unicodedata.category(c)[0] in "CZ" for c in stripped):
        raise InvalidInput(
            f"{where} has no readable characters (only control or format characters)"
        )
    return stripped


class ClassificationService:
    def __init__(self, engine: Engine, backends: VersionLoader, settings: ServingSettings) -> None:
        self._engine = engine
        self._backends = backends
        self._settings = settings

    async def classify(
        self, items: Sequence[ReviewInput], *, source: Source, tenant: str = ""
    ) -> list[Classified]:
        """Classify and store a batch in one transaction; nothing is stored if it fails."""
        if not items:
            raise InvalidInput("no reviews given")
        texts = [
            clean_text(item.text, i, self._settings.max_text_chars) for i, item in enumerate(items)
        ]
        version, verdicts, fallback, latency_ms = await self._run_chain(texts)
        return await asyncio.to_thread(
            self._store, items, texts, version, verdicts, fallback, latency_ms, source, tenant
        )

    def chain(self) -> list[ModelVersion]:
        """The active version, then the fallbacks (the latest version of each fallback backend)."""
        first = registry.active(self._engine)
        chain = [first]
        for backend in self._settings.fallbacks:
            version = registry.latest_of_backend(
                self._engine, backend, [v.id for v in chain if v.id]
            )
            if version is not None:
                chain.append(version)
        return chain

    async def _run_chain(self, texts: list[str]) -> tuple[ModelVersion, list[Verdict], bool, float]:
        failures = []
        for position, version in enumerate(await asyncio.to_thread(self.chain)):
            started = time.perf_counter()
            try:
                classifier = self._backends.for_version(version)
                verdicts = await classifier.classify(texts)
            except (BackendError, OSError, ValueError) as error:
                log.warning("model version %s failed: %s", version.id, error)
                failures.append(f"{version.backend} (version {version.id}): {error}")
                continue
            if len(verdicts) != len(texts):
                failures.append(
                    f"{version.backend}: answered {len(verdicts)} of {len(texts)} reviews"
                )
                continue
            return version, verdicts, position > 0, (time.perf_counter() - started) * 1000
        raise BackendUnavailable("no model could classify the reviews: " + "; ".join(failures))

    def _store(
        self,
        items: Sequence[ReviewInput],
        texts: list[str],
        version: ModelVersion,
        verdicts: list[Verdict],
        fallback: bool,
        latency_ms: float,
        source: Source,
        tenant: str,
    ) -> list[Classified]:
        assert version.id is not None
        per_review_ms = latency_ms / len(texts)
        with unit_of_work(self._engine) as session:
            reviews = _reviews_for(session, items, texts, source, tenant)
            predictions = [
                Prediction(
                    review_id=saved_id(review),
                    model_version_id=version.id,
                    backend=version.backend,
                    model_id=verdict.model_id,
                    label=int(verdict.label),
                    confidence=verdict.confidence,
                    latency_ms=per_review_ms,
                    fallback=fallback,
                )
                for review, verdict in zip(reviews, verdicts, strict=True)
            ]
            session.add_all(predictions)
            session.flush()
            return [
                Classified(
                    review_id=saved_id(review),
                    prediction_id=saved_id(prediction),
                    text=text,
                    verdict=verdict,
                    model_version_id=version.id,
                    backend=version.backend,
                    fallback=fallback,
                )
                for review, prediction, text, verdict in zip(
                    reviews, predictions, texts, verdicts, strict=True
                )
            ]


def _reviews_for(
    session: Session, items: Sequence[ReviewInput], texts: list[str], source: Source, tenant: str
) -> list[Review]:
    """A Review per item: the stored one when its external id was seen before, else a new one."""
    external_ids = [item.external_id for item in items if item.external_id is not None]
    known: dict[str, Review] = {}
    if external_ids:
        known = {
            review.external_id: review
            for review in session.exec(
                select(Review).where(
                    Review.source == source,
                    Review.tenant == tenant,
                    col(Review.external_id).in_(external_ids),
                )
            )
            if review.external_id is not None
        }
    reviews = []
    for item, text in zip(items, texts, strict=True):
        review = known.get(item.external_id) if item.external_id is not None else None
        if review is None:
            review = Review(
                text=text,
                text_hash=text_hash(text),
                source=source,
                tenant=tenant,
                merchant_id=item.merchant_id,
                external_id=item.external_id,
            )
            session.add(review)
            if item.external_id is not None:
                known[item.external_id] = review
        reviews.append(review)
    session.flush()
    return reviews
