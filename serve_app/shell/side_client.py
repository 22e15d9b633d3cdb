"""The combiner's client of one scoring side: calls in chunks, within the side's share of the
budget, behind a circuit breaker; a side that cannot answer gives :class:`Unavailable`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from serve_app.core.hybrid import Unavailable
from serve_app.core.sides import Call, SideName
from serve_app.shell.breaker import Breaker
from serve_app.shell.metrics import Counts
from serve_app.shell.reload import VersionGone
from serve_app.shell.remote import once_more

log = logging.getLogger("segue.app")
# a round's calls to one side go in chunks of at most this many, concurrently: a big batch
# (the ingress's misses under load) spreads over the side's replicas instead of queueing on one
SIDE_CHUNK = 16
STATUS_TIMEOUT_S = 1.0


class SideClient:
    """``await side.call(version, calls)``: the side's answers, in order. ``handle`` is the side's
    deployment handle (``call_many(version, calls)``, ``status()``); ``timeout_s`` its share of a
    request's budget."""

    def __init__(self, name: SideName, handle: Any, counts: Counts, timeout_s: float) -> None:
        self.name = name
        self.handle = handle
        self.counts = counts
        self.timeout_s = timeout_s
        self.breaker = Breaker()

    async def call(self, version: str, calls: list[Call]) -> list:
        """The answers to ``calls`` (sent in chunks of ``SIDE_CHUNK``, concurrently), or
        :class:`Unavailable` for each when the side fails, does not answer within ``timeout_s``,
        or its breaker is open (it kept failing: no call waits for it until a probe gets through)."""
        if not self.breaker.allow():
            return [Unavailable(self.name, "circuit open")] * len(calls)

        async def send(chunk: list[Call]) -> list:
            return await once_more(lambda: self.handle.call_many.remote(version, chunk))

        chunks = [calls[i : i + SIDE_CHUNK] for i in range(0, len(calls), SIDE_CHUNK)]
        try:
            parts = await asyncio.wait_for(asyncio.gather(*[send(c) for c in chunks]), self.timeout_s)
        except VersionGone as exc:  # the side answered: it has not loaded this version yet (or any more)
            self.breaker.success()
            raise VersionGone(str(exc)) from None
        except asyncio.CancelledError:  # the caller gave up (ingress deadline): no verdict on the side
            self.breaker.abandon()
            raise
        except Exception as exc:
            self.breaker.failure()
            why = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            log.warning(
                "%s part unavailable for %d call(s): %s (breaker %s)", self.name, len(calls), why, self.breaker.state
            )
            self.counts.inc("segue_part_unavailable", {"part": self.name, "why": why})
            return [Unavailable(self.name, why)] * len(calls)
        self.breaker.success()
        return [answer for part in parts for answer in part]

    async def status(self) -> dict:
        """One replica's bundle state (not loaded, with why, when it does not answer within a second)."""
        try:
            return await asyncio.wait_for(self.handle.status.remote(), STATUS_TIMEOUT_S)
        except Exception as exc:
            return {"version": None, "refused": {}, "detail": f"not answering: {type(exc).__name__}"}
