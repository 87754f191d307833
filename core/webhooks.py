"""Webhook deliveries, processed exactly once: a retried delivery gets the first response back.

The response is stored in the same transaction as the reviews it describes, under a unique
(client, webhook id) key: of two deliveries racing with the same id (in one process or several),
one commits and the other rolls back and answers with what the first stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.classification import ClassificationService, Classified, ReviewInput
from core.clients import Caller
from core.errors import Conflict, InvalidInput
from core.tables import Source, WebhookDelivery

Respond = Callable[[list[Classified]], dict[str, Any]]
"""Turns the stored results into the response to remember (a JSON object)."""


@dataclass(frozen=True)
class Delivery:
    response: dict[str, Any]
    replayed: bool
    """True when this is a retry and ``response`` is the one given the first time."""


class _AlreadyDelivered(Exception):
    pass


class WebhookService:
    def __init__(self, engine: Engine, classification: ClassificationService) -> None:
        self._engine = engine
        self._classification = classification

    async def deliver(
        self,
        caller: Caller,
        webhook_id: str,
        items: Sequence[ReviewInput],
        respond: Respond,
    ) -> Delivery:
        """Classify and store the delivery's reviews once per ``webhook_id``."""
        if not webhook_id.strip() or len(webhook_id) > 256:
            raise InvalidInput("webhook-id must be 1 to 256 characters")
        stored = await asyncio.to_thread(self._stored, caller.id, webhook_id)
        if stored is not None:
            return Delivery(stored, replayed=True)
        response: dict[str, Any] = {}

        def remember(session: Session, results: list[Classified]) -> None:
            response.clear()
            response.update(respond(results))
            session.add(
                WebhookDelivery(client_id=caller.id, webhook_id=webhook_id, response=dict(response))
            )
            try:
                session.flush()
            except IntegrityError:
                raise _AlreadyDelivered from None

        try:
            await self._classification.classify(
                items, source=Source.WEBHOOK, tenant=caller.name, on_stored=remember
            )
        except _AlreadyDelivered:
            stored = await asyncio.to_thread(self._stored, caller.id, webhook_id)
            if stored is None:
                raise Conflict(
                    f"webhook {webhook_id!r} could not be stored; send it again"
                ) from None
            return Delivery(stored, replayed=True)
        return Delivery(response, replayed=False)

    def _stored(self, client_id: int, webhook_id: str) -> dict[str, Any] | None:
        with Session(self._engine) as session:
            delivery = session.exec(
                select(WebhookDelivery).where(
                    WebhookDelivery.client_id == client_id,
                    WebhookDelivery.webhook_id == webhook_id,
                )
            ).first()
        return delivery.response if delivery is not None else None
