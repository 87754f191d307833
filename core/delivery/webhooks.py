"""Webhook deliveries, processed exactly once: a retried delivery gets the first response back.

Two kinds: reviews to classify (``deliver``) and human labels (``deliver_labels``). The
response is stored in the same transaction as the reviews or labels it describes, under a unique
(client, webhook id) key: of two deliveries racing with the same id (in one process or several),
one commits and the other rolls back and answers with what the first stored.

A delivery is known by its id *and* the sha256 of its signed body, as payment APIs treat an
idempotency key: the same id with another body is not a retry but a mistake (a reused or
colliding id), refused as a Conflict ``idempotency_conflict`` rather than answered with the
first response while the new body's content is dropped. Deliveries stored before the hash was
kept (``body_sha256`` None) are replayed for any body, as they were.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.access.clients import Caller
from core.classify.service import ClassificationService, Classified, ReviewInput
from core.errors import Conflict, InvalidInput
from core.labels.feedback import FeedbackService, LabelInput, Labelled
from core.store.tables import Source, WebhookDelivery

Answer = Callable[[list[Classified]], dict[str, Any]]
"""The front door's answer to a delivery, from its stored results (a JSON object); it is stored
in the same transaction, and a retried delivery gets it back word for word."""
LabelsAnswer = Callable[[list[Labelled]], dict[str, Any]]
"""The same for stored labels."""

IDEMPOTENCY_CONFLICT = "idempotency_conflict"
"""The code of the Conflict for a webhook id already used with another body."""

_Result = TypeVar("_Result")
_Remember = Callable[[Session, list[_Result]], None]


@dataclass(frozen=True)
class Delivery:
    response: dict[str, Any]
    replayed: bool
    """True when this is a retry and ``response`` is the one given the first time."""


class _AlreadyDelivered(Exception):
    pass


class WebhookService:
    def __init__(
        self, engine: Engine, classification: ClassificationService, feedback: FeedbackService
    ) -> None:
        self._engine = engine
        self._classification = classification
        self._feedback = feedback

    async def deliver(
        self,
        caller: Caller,
        webhook_id: str,
        items: Sequence[ReviewInput],
        answer: Answer,
        *,
        body: bytes,
    ) -> Delivery:
        """Classify and store the delivery's reviews once per ``webhook_id``; ``body`` is the
        signed body (the same id with another body is a Conflict ``idempotency_conflict``)."""

        async def store(remember: _Remember[Classified]) -> None:
            await self._classification.classify(
                items, source=Source.WEBHOOK, tenant=caller.name, on_stored=remember
            )

        return await self._once(caller, webhook_id, body, answer, store)

    async def deliver_labels(
        self,
        caller: Caller,
        webhook_id: str,
        labels: Sequence[LabelInput],
        answer: LabelsAnswer,
        *,
        body: bytes,
    ) -> Delivery:
        """Store the delivery's labels once per ``webhook_id`` (and ``body``, as ``deliver``),
        all or none. A client labels only its own reviews; an admin key any (its labels are
        admins' labels)."""

        async def store(remember: _Remember[Labelled]) -> None:
            await self._feedback.record_many(
                labels,
                channel=Source.WEBHOOK,
                tenant=caller.principal.scope,
                role=caller.principal.role,
                on_stored=remember,
            )

        return await self._once(caller, webhook_id, body, answer, store)

    async def _once(
        self,
        caller: Caller,
        webhook_id: str,
        body: bytes,
        answer_of: Callable[[list[_Result]], dict[str, Any]],
        store: Callable[[_Remember[_Result]], Awaitable[None]],
    ) -> Delivery:
        """Run ``store`` unless this delivery was stored before: then replay its response (or
        refuse another body under its id). ``store`` calls ``remember`` in its transaction."""
        if not webhook_id.strip() or len(webhook_id) > 256:
            raise InvalidInput("webhook-id must be 1 to 256 characters")
        digest = hashlib.sha256(body).hexdigest()
        replay = await self._replay(caller, webhook_id, digest)
        if replay is not None:
            return replay
        response: dict[str, Any] = {}

        def remember(session: Session, results: list[_Result]) -> None:
            """Store the response in the session's transaction (and keep it in ``response``);
            a delivery already stored under this id raises ``_AlreadyDelivered``."""
            answer = answer_of(results)
            response.clear()
            response.update(answer)
            session.add(
                WebhookDelivery(
                    client_id=caller.id,
                    webhook_id=webhook_id,
                    body_sha256=digest,
                    response=dict(answer),
                )
            )
            try:
                session.flush()
            except IntegrityError:
                raise _AlreadyDelivered from None

        try:
            await store(remember)
        except _AlreadyDelivered:
            # Another delivery with this id won the race: its response, if it had this body.
            replay = await self._replay(caller, webhook_id, digest)
            if replay is None:
                raise Conflict(
                    f"webhook {webhook_id!r} could not be stored; send it again"
                ) from None
            return replay
        return Delivery(response, replayed=False)

    async def _replay(self, caller: Caller, webhook_id: str, digest: str) -> Delivery | None:
        """The first response to the delivery stored under ``webhook_id``, if any; a Conflict
        when that one was signed over another body."""
        stored = await asyncio.to_thread(self._stored, caller.id, webhook_id)
        if stored is None:
            return None
        if stored.body_sha256 is not None and stored.body_sha256 != digest:
            raise Conflict(
                f"webhook-id {webhook_id!r} was already used for a delivery with another body; "
                "a retry must send the same bytes, a new delivery needs a new id",
                code=IDEMPOTENCY_CONFLICT,
            )
        return Delivery(stored.response, replayed=True)

    def _stored(self, client_id: int, webhook_id: str) -> WebhookDelivery | None:
        with Session(self._engine) as session:
            return session.exec(
                select(WebhookDelivery).where(
                    WebhookDelivery.client_id == client_id,
                    WebhookDelivery.webhook_id == webhook_id,
                )
            ).first()
