"""What the core tells whoever listens in this process: reviews classified, labels recorded.

Each process's metrics (and alerts) subscribe here, so every channel (API, webhooks, Telegram,
the command line) is counted the same way, by the core that did the work. A listener that
fails is logged and never fails the work it hears about.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")


class Events:
    def __init__(self) -> None:
        self._listeners: defaultdict[type, list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, kind: type[E], listener: Callable[[E], None]) -> None:
        self._listeners[kind].append(listener)

    def publish(self, event: object) -> None:
        for listener in self._listeners.get(type(event), ()):
            try:
                listener(event)
            except Exception:
                log.exception("a listener of %s failed", type(event).__name__)
