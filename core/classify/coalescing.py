"""Coalescing: requests that arrive while batches are being processed go together into the next.

At low load a request is processed at once (after two turns of the event loop); under load the
requests that queued up meanwhile share one model call and one transaction, so the per-request
cost of both shrinks as concurrency grows, with no timer to tune. Two batches may be in flight,
so that one is classified while the other waits on the store (or on a remote model).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")

Process = Callable[[list[Request]], Awaitable[list[Result | BaseException]]]

GATHER_TURNS = 4
"""The most extra turns of the event loop a batch waits for, while requests keep joining it."""


class Coalescer(Generic[Request, Result]):
    """Feeds ``process`` batches of waiting requests, ``in_flight`` batches at a time at most.

    ``process`` returns one outcome per request, a result or an exception, so that a request
    that fails does not fail the others in its batch. ``weight`` caps a batch's size (a request
    heavier than ``max_weight`` goes alone).
    """

    def __init__(
        self,
        process: Process[Request, Result],
        *,
        max_weight: int,
        weight: Callable[[Request], int],
        in_flight: int = 2,
    ) -> None:
        self._process = process
        self._max_weight = max_weight
        self._weight = weight
        self._in_flight = in_flight
        self._pending: list[tuple[Request, asyncio.Future[Result]]] = []
        self._draining = 0
        self._workers: set[asyncio.Task[None]] = set()  # referenced until done
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, request: Request) -> Result:
        """Queue ``request`` and wait for its outcome.

        A caller that is cancelled while waiting stops waiting; its request is still carried out
        (it may already be part of a transaction in flight) and its outcome is dropped.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new event loop (e.g. each asyncio.run of a command): the old one's queue is gone.
            self._loop, self._pending, self._draining, self._workers = loop, [], 0, set()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((request, future))
        if self._draining < self._in_flight:
            self._draining += 1
            worker = loop.create_task(self._drain())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return await future

    async def _drain(self) -> None:
        try:
            await self._gather()
            while self._pending:
                batch = self._take()
                try:
                    outcomes = await self._process([request for request, _ in batch])
                except Exception as error:
                    outcomes = [error] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            # No await since the queue was last seen empty: a request queued from now on
            # starts a worker of its own.
            self._draining -= 1

    async def _gather(self) -> None:
        """Let the event loop turn while requests keep joining the queue: under load, the
        requests being read at this moment go into this batch rather than each into a small one
        of its own (one model call and one commit for all of them)."""
        await asyncio.sleep(0)
        for _ in range(GATHER_TURNS):
            queued = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) == queued:
                return

    def _take(self) -> list[tuple[Request, asyncio.Future[Result]]]:
        taken, total = 0, 0
        for request, _ in self._pending:
            total += self._weight(request)
            if taken and total > self._max_weight:
                break
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch
