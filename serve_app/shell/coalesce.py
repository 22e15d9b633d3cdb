"""Group commit for calls to another process: every item that arrives while a call is in
flight goes out together in the next one.

A fixed batching window (wait N ms for company, then send; Serve's ``@serve.batch``) either
adds its wait to every request at low load or sends batches too small to pay for the hop at
high load, and with one batch in flight at a time the small batches queue behind each
other. Here nothing waits while the line is free, and under load a batch holds what arrived
during one round trip, so the number of calls per second stays bounded by the round trip
whatever the request rate.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await c.submit(item)`` answers ``run(batch)[i]`` for the batch the item went out in.

    ``run`` takes a list of items and returns one result per item, in order; an exception it
    raises is raised to every caller of that batch. At most ``in_flight`` calls run at once,
    each with at most ``max_batch`` items."""

    def __init__(
        self, run: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int = 64, in_flight: int = 1
    ) -> None:
        if max_batch < 1 or in_flight < 1:
            raise ValueError("max_batch and in_flight must be >= 1")
        self.run = run
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._running = 0
        self.calls = 0  # batches sent so far (a figure for tests and benchmarks)

    async def submit(self, item: T) -> R:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running < self.in_flight:
            self._running += 1
            # outside the submitter's context: a batch serves many callers, not the first one
            # (under Serve, the context holds the request's id and route)
            asyncio.get_running_loop().create_task(self._drain(), context=contextvars.Context())
        return await future

    async def _drain(self) -> None:
        """Send what is pending, batch after batch, until nothing is."""
        try:
            while self._pending:
                batch = [(i, f) for i, f in self._pending[: self.max_batch] if not f.done()]  # done: caller gone
                del self._pending[: self.max_batch]
                if batch:
                    await self._send(batch)
        finally:
            self._running -= 1

    async def _send(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        self.calls += 1
        try:
            results = await self.run([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, f in batch:
                f.cancel()
            raise
        except Exception as exc:
            for _, f in batch:
                if not f.done():
                    f.set_exception(exc)
            return
        if len(results) != len(batch):
            short = RuntimeError(f"batch of {len(batch)} answered with {len(results)} results")
            for _, f in batch:
                if not f.done():
                    f.set_exception(short)
            return
        for (_, f), result in zip(batch, results):
            if not f.done():
                f.set_result(result)
