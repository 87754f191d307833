"""What keeps a remote backend polite and failing fast: a rate limiter and a circuit breaker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from serving.base import BackendError


class CircuitOpen(BackendError):
    """The backend failed too often lately; calls fail at once until it is probed again."""


class CircuitBreaker:
    """Opens after ``failures`` consecutive failed calls; after ``reset_s`` one probe may go.

    The probe's outcome closes the circuit again or keeps it open for another ``reset_s``.
    Only failures that say the backend is down count (timeouts, 5xx, no connection); a backend
    that answers, even with a refusal, is up. ``trip`` opens it at once (say, on a refused key),
    for ``reset_s`` or for as long as the backend said (a quota that resets at a stated time).
    """

    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ValueError("the breaker needs a failure threshold of at least 1")
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._open_for = reset_s
        self._probing = False
        self._reason = ""

    @property
    def is_open(self) -> bool:
        """Open, whether or not a probe may go now."""
        with self._lock:
            return self._opened_at is not None

    @property
    def refusing(self) -> bool:
        """Open, and no probe may go yet."""
        return self.refusal() is not None

    def refusal(self) -> CircuitOpen | None:
        """What ``before_call`` would raise now, without taking the probe's turn."""
        with self._lock:
            return self._refusal()

    def before_call(self) -> None:
        """Return if a call may go now, or raise ``CircuitOpen``."""
        with self._lock:
            refusal = self._refusal()
            if refusal is None and self._opened_at is not None:
                self._probing = True
        if refusal is not None:
            raise refusal

    def _refusal(self) -> CircuitOpen | None:
        if self._opened_at is None:
            return None
        waited = self._clock() - self._opened_at
        if waited >= self._open_for and not self._probing:
            return None
        retry_in = max(0.0, self._open_for - waited)
        return CircuitOpen(
            f"circuit open ({self._reason}); the backend is probed again in {retry_in:.1f}s"
        )

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failed(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or (self._failures >= self._threshold and self._opened_at is None):
                self._open(
                    f"{self._failures} consecutive failures, the last: {reason}", self._reset_s
                )

    def abandoned(self) -> None:
        """A call ended without telling whether the backend is up (it was cancelled, say)."""
        with self._lock:
            self._probing = False

    def trip(self, reason: str, for_s: float | None = None) -> None:
        """Open now, for ``for_s`` (default ``reset_s``): the backend refused us in a way that
        repeating will not change before then."""
        with self._lock:
            self._open(reason, self._reset_s if for_s is None else for_s)

    def _open(self, reason: str, for_s: float) -> None:
        self._probing = False
        self._opened_at = self._clock()
        self._open_for = for_s
        self._reason = reason


class RateLimiter:
    """Spaces the starts of calls at least ``1 / per_second`` apart, across all callers."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0:
            raise ValueError("the rate limit must be positive")
        self._interval = 1.0 / per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._next_start = 0.0

    async def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)
