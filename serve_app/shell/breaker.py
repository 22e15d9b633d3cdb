"""A circuit breaker per scoring side: once a side keeps failing, stop waiting for it.

While a side is down (dead, erroring, hung), every call to it would wait out its whole time
budget before the combiner falls back to the other side. The breaker opens after
``failures`` failures in a row: calls are then refused at once (the answer falls back
without waiting) for ``cooldown_s``; after that one call goes through as a probe (the
others are still refused while it runs), and its outcome closes the breaker or opens it
for another cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Breaker:
    """``allow()`` before a call, then ``success()``, ``failure()`` or (cancelled, no verdict)
    ``abandon()`` for a call that was allowed."""

    def __init__(self, failures: int = 3, cooldown_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown_s < 0:
            raise ValueError("failures must be >= 1 and cooldown_s >= 0")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._failed = 0
        self._open_until: float | None = None  # None: closed
        self._probing = False
        self.opened = 0  # times the breaker opened (a figure for /readyz)

    @property
    def state(self) -> str:
        if self._open_until is None:
            return "closed"
        return "probing" if self._probing or self.clock() >= self._open_until else "open"

    def allow(self) -> bool:
        if self._open_until is None:
            return True
        if self._probing or self.clock() < self._open_until:
            return False
        self._probing = True  # this call is the probe
        return True

    def success(self) -> None:
        self._failed, self._open_until, self._probing = 0, None, False

    def failure(self) -> None:
        self._failed += 1
        if self._probing or self._failed >= self.failures:
            if self._open_until is None:
                self.opened += 1
            self._open_until = self.clock() + self.cooldown_s
            self._probing = False

    def abandon(self) -> None:
        """The allowed call ended without a verdict (its caller was cancelled): a probe gives its
        turn to the next call, which would otherwise be refused for good."""
        self._probing = False

    def report(self) -> dict:
        return {"state": self.state, "opened": self.opened}
