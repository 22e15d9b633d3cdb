"""Per-client rate limits (moving window, in the replica's memory) for the routes that write or
guard something: ``/feedback`` and the admin routes."""

from __future__ import annotations

from fastapi import Request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

FEEDBACK_RATE = parse("10/second")  # per client address and ingress replica
ADMIN_RATE = parse("10/second")  # the same, for the admin routes (checked before the token)


class ClientLimits:
    """``allowed(rate, scope, request)``: count one hit of the client's address against ``rate``."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def allowed(self, rate: RateLimitItem, scope: str, request: Request) -> bool:
        """False once the client used ``rate`` up in ``scope``."""
        return self._limiter.hit(rate, scope, request.client.host if request.client else "unknown")
