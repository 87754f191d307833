"""Classify reviews: validate, run the active model, fall back along the chain, record it all.

Past 300 lines because one request's path is one story here: routing to a tenant's view or the
chain, one model call for coalesced requests, and the store's all-or-each-alone retry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col

from core.classify import recording
from core.classify.coalescing import Coalescer
from core.config import ServingSettings
from core.errors import BackendUnavailable, Conflict, InvalidInput, StoreUnavailable
from core.events import Events
from core.models import registry
from core.models.views import TenantViews
from core.store.db import STORE_OUTAGES, run_store_work, unit_of_work
from core.store.tables import ModelStatus, ModelVersion, Source, TenantView, saved_id
from serving.base import BackendError, Classifier, Verdict

log = logging.getLogger(__name__)

COALESCE_MAX_REVIEWS = 4096
"""The most reviews that concurrent requests put together into one model call."""
_ACTIVE_STAMP = sa_select(col(ModelVersion.id), col(ModelVersion.promoted_at)).where(
    col(ModelVersion.status) == ModelStatus.ACTIVE
)


class VersionLoader(Protocol):
    def for_version(self, version: ModelVersion) -> Classifier: ...
    def for_view(self, view: TenantView) -> Classifier: ...


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
    tenant_view_id: int | None = None
    """The tenant's own view that answered, if one did (``model_version_id`` is then the shared
    version it stands in front of)."""


@dataclass(frozen=True)
class ReviewsClassified:
    """Published once a request's reviews and predictions are stored."""

    results: list[Classified]
    source: Source


StoreHook = Callable[[Session, list[Classified]], None]
"""Runs inside the transaction that stores a request's reviews, once they are inserted."""


@dataclass(frozen=True)
class _Job:
    items: Sequence[ReviewInput]
    texts: list[str]
    source: Source
    tenant: str
    on_stored: StoreHook | None


@dataclass(frozen=True)
class _Served:
    verdict: Verdict
    version: ModelVersion
    fallback: bool


@dataclass(frozen=True)
class _Run:
    served: list[_Served]
    """One per text: a text the first backend declined was answered further down the chain."""
    latency_ms: float
    view_id: int | None = None


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
    def __init__(
        self,
        engine: Engine,
        backends: VersionLoader,
        settings: ServingSettings,
        views: TenantViews | None = None,
        events: Events | None = None,
    ) -> None:
        self._engine = engine
        self._events = events or Events()
        self._views = views
        self._backends = backends
        self._settings = settings
        self.backend_errors: Counter[str] = Counter()
        """Failed model calls so far, by backend (for the metrics)."""
        self._chain: tuple[tuple[object, ...], list[ModelVersion]] | None = None
        self._writing = threading.Lock()
        """One batch written at a time: on SQLite a second writer would wait in SQLite's busy
        handler, which sleeps in steps of up to 100 ms."""
        self._coalescer: Coalescer[_Job, list[Classified]] = Coalescer(
            self._classify_jobs, max_weight=COALESCE_MAX_REVIEWS, weight=lambda job: len(job.texts)
        )

    async def classify(
        self,
        items: Sequence[ReviewInput],
        *,
        source: Source,
        tenant: str = "",
        on_stored: StoreHook | None = None,
    ) -> list[Classified]:
        """Classify and store a batch in one transaction; nothing is stored if it fails.

        Concurrent calls share one model call and one transaction; if that transaction fails,
        each call is stored in its own, so one call's failure is never another's.
        """
        if not items:
            raise InvalidInput("no reviews given")
        texts = [
            clean_text(item.text, i, self._settings.max_text_chars) for i, item in enumerate(items)
        ]
        results = await self._coalescer.submit(_Job(items, texts, source, tenant, on_stored))
        self._events.publish(ReviewsClassified(results, source))
        return results

    async def ready(self) -> ModelVersion:
        """The version that would answer now: the first of the chain that loads and whose
        backend says it can answer (a lost vLLM adapter is loaded again on the way)."""
        try:
            chain = await run_store_work(self._engine, self.chain)
        except SQLAlchemyError as error:
            raise StoreUnavailable(f"the store cannot be reached: {type(error).__name__}") from None
        failures = []
        for version in chain:
            try:
                await self._backends.for_version(version).probe()
            except (BackendError, OSError, ValueError) as error:
                failures.append(f"{version.backend} (version {version.id}): {error}")
                continue
            return version
        raise BackendUnavailable("no model version can be loaded: " + "; ".join(failures))

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

    def _current_chain(self) -> list[ModelVersion]:
        """``chain()``, built again only when the active version (or the fallbacks) changed."""
        with self._engine.connect() as connection:
            active = connection.execute(_ACTIVE_STAMP).first()
        stamp = (tuple(active or ()), tuple(self._settings.fallbacks))
        if self._chain is None or self._chain[0] != stamp:
            self._chain = (stamp, self.chain())
        return self._chain[1]

    def _routes(self) -> tuple[list[ModelVersion], dict[str, TenantView]]:
        """The chain, and the tenants' views (served only while the CPU model is the shared one)."""
        chain = self._current_chain()
        if self._views is None or chain[0].backend != "local":
            return chain, {}
        return chain, self._views.active()

    async def _run_chain(
        self, texts: list[str], chain: list[ModelVersion], view: TenantView | None = None
    ) -> _Run:
        started = time.perf_counter()
        if view is not None:
            try:
                answers = await self._backends.for_view(view).classify(texts)
            except (BackendError, OSError, ValueError) as error:
                log.warning("the view of tenant %s failed: %s", view.tenant, error)
                self.backend_errors["local"] += 1
            else:
                if len(answers) == len(texts) and all(isinstance(a, Verdict) for a in answers):
                    served = [
                        _Served(a, chain[0], False) for a in answers if isinstance(a, Verdict)
                    ]
                    return _Run(served, (time.perf_counter() - started) * 1000, view.id)
        served = await self._answer(texts, chain, first=0)
        return _Run(served, (time.perf_counter() - started) * 1000)

    async def _answer(
        self, texts: list[str], chain: list[ModelVersion], first: int
    ) -> list[_Served]:
        """Each text's verdict from the first version of ``chain[first:]`` that answers; a text
        a backend declines (a content filter) goes on down the chain alone."""
        failures = []
        for position in range(first, len(chain)):
            version = chain[position]
            try:
                answers = await self._backends.for_version(version).classify(texts)
            except (BackendError, OSError, ValueError) as error:
                log.warning("model version %s failed: %s", version.id, error)
                self.backend_errors[version.backend] += 1
                failures.append(f"{version.backend} (version {version.id}): {error}")
                continue
            if len(answers) != len(texts):
                failures.append(
                    f"{version.backend}: answered {len(answers)} of {len(texts)} reviews"
                )
                continue
            served = [
                _Served(a, version, position > 0) if isinstance(a, Verdict) else None
                for a in answers
            ]
            declined = [i for i, one in enumerate(served) if one is None]
            if declined:
                log.info("model version %s declined %d review(s)", version.id, len(declined))
                rest = await self._answer([texts[i] for i in declined], chain, position + 1)
                for i, one in zip(declined, rest, strict=True):
                    served[i] = replace(one, fallback=True)
            return [one for one in served if one is not None]
        raise BackendUnavailable("no model could classify the reviews: " + "; ".join(failures))

    async def _classify_jobs(self, jobs: list[_Job]) -> list[list[Classified] | BaseException]:
        """One model call per view (usually one: the shared model), one per job if that fails;
        then one transaction for all."""
        chain, views = await run_store_work(self._engine, self._routes)
        groups: dict[int | None, list[int]] = {}
        for i, job in enumerate(jobs):
            view = views.get(job.tenant)
            groups.setdefault(view.id if view else None, []).append(i)
        runs: list[_Run | BaseException] = [BaseException()] * len(jobs)
        for indices in groups.values():
            group = [jobs[i] for i in indices]
            view = views.get(group[0].tenant)
            for i, run in zip(indices, await self._run_group(group, chain, view), strict=True):
                runs[i] = run
        ready = [(job, run) for job, run in zip(jobs, runs, strict=True) if isinstance(run, _Run)]
        stored = iter(await run_store_work(self._engine, lambda: self._store_all(ready)))
        return [next(stored) if isinstance(run, _Run) else run for run in runs]

    async def _run_group(
        self, jobs: list[_Job], chain: list[ModelVersion], view: TenantView | None
    ) -> list[_Run | BaseException]:
        texts = [text for job in jobs for text in job.texts]
        try:
            run = await self._run_chain(texts, chain, view)
        except BackendUnavailable as error:
            if len(jobs) == 1:
                return [error]
            # One review may be what the backend chokes on: try each request on its own.
            return list(
                await asyncio.gather(
                    *(self._run_chain(job.texts, chain, view) for job in jobs),
                    return_exceptions=True,
                )
            )
        runs: list[_Run | BaseException] = []
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            share_ms = run.latency_ms * len(job.texts) / len(texts)
            runs.append(replace(run, served=run.served[start:end], latency_ms=share_ms))
            start = end
        return runs

    def _store_all(self, jobs: list[tuple[_Job, _Run]]) -> list[list[Classified] | BaseException]:
        with self._writing:
            return self._store_batch(jobs)

    def _store_batch(self, jobs: list[tuple[_Job, _Run]]) -> list[list[Classified] | BaseException]:
        if len(jobs) > 1:
            try:
                with unit_of_work(self._engine) as session:
                    return list(self._store(session, jobs))
            except STORE_OUTAGES as error:
                # The store is out of reach, or the connection broke: the commit may even have
                # happened. Storing each request again could store its reviews twice.
                return [error] * len(jobs)
            except Exception as error:
                log.info(
                    "storing %d requests together failed (%s); one by one now", len(jobs), error
                )
        return [self._store_alone(job, run) for job, run in jobs]

    def _store_alone(self, job: _Job, run: _Run) -> list[Classified] | BaseException:
        """In a transaction of its own; tried again once when another writer stored one of its
        reviews (same external id) first."""
        for attempt in (1, 2):
            try:
                with unit_of_work(self._engine) as session:
                    return self._store(session, [(job, run)])[0]
            except IntegrityError:
                if attempt == 2:
                    return Conflict("the reviews were being stored by another request; retry")
            except Exception as error:
                return error
        raise AssertionError("unreachable")

    def _store(self, session: Session, jobs: list[tuple[_Job, _Run]]) -> list[list[Classified]]:
        """Record the jobs' reviews and predictions (one insert each for all), then run each
        job's hook."""
        ids = iter(
            recording.record(
                session,
                [
                    recording.Entry(
                        item,
                        text,
                        job.source,
                        job.tenant,
                        one.verdict,
                        one.version,
                        one.fallback,
                        run.latency_ms / len(run.served),
                        run.view_id,
                    )
                    for job, run in jobs
                    for item, text, one in zip(job.items, job.texts, run.served, strict=True)
                ],
            )
        )
        stored = []
        for job, run in jobs:
            results = [
                Classified(
                    review_id=review_id,
                    prediction_id=prediction_id,
                    text=text,
                    verdict=one.verdict,
                    model_version_id=saved_id(one.version),
                    backend=one.version.backend,
                    fallback=one.fallback,
                    tenant_view_id=run.view_id,
                )
                for (review_id, prediction_id), text, one in zip(
                    islice(ids, len(job.texts)), job.texts, run.served, strict=True
                )
            ]
            if job.on_stored is not None:
                job.on_stored(session, results)
            stored.append(results)
        return stored
