"""Group commit of cache misses (serve_app.shell.coalesce): batches form from what arrives while a
call is in flight, each caller gets its own answer or its batch's error."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.shell.coalesce import Coalescer


class Echo:
    """A remote side that answers ``x * 10`` per item after ``delay`` seconds; records its batches."""

    def __init__(self, delay: float = 0.01, fail_on: int | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [x * 10 for x in items]


async def first_in_flight(side: Echo, item: int = 0, wait: float = 0.005) -> tuple[Coalescer, asyncio.Task]:
    """A coalescer over ``side`` with ``item``'s call in flight (after ``wait`` seconds)."""
    c = Coalescer(side)
    first = asyncio.create_task(c.submit(item))
    await asyncio.sleep(wait)
    return c, first


def test_a_lone_item_goes_out_at_once() -> None:
    async def main() -> None:
        side = Echo(delay=0.0)
        c = Coalescer(side)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await c.submit(4) == 40
        assert loop.time() - t0 < 0.05  # no batching window to wait out
        assert side.batches == [[4]]

    asyncio.run(main())


def test_items_arriving_during_a_call_share_the_next_one() -> None:
    async def main() -> None:
        side = Echo(delay=0.05)
        c, first = await first_in_flight(side, wait=0.01)
        rest = [asyncio.create_task(c.submit(i)) for i in range(1, 8)]
        assert await asyncio.gather(first, *rest) == [i * 10 for i in range(8)]
        assert side.batches == [[0], list(range(1, 8))]
        assert side.most_running == 1 and c.calls == 2

    asyncio.run(main())


def test_batches_are_capped_and_calls_in_flight_bounded() -> None:
    async def main() -> None:
        side = Echo(delay=0.02)
        c = Coalescer(side, max_batch=3, in_flight=2)
        answers = await asyncio.gather(*[c.submit(i) for i in range(10)])
        assert answers == [i * 10 for i in range(10)]
        assert max(len(b) for b in side.batches) == 3
        assert sorted(x for b in side.batches for x in b) == list(range(10))
        assert side.most_running == 2

    asyncio.run(main())


def test_an_error_reaches_every_caller_of_its_batch_only() -> None:
    async def main() -> None:
        side = Echo(delay=0.02, fail_on=2)
        c, first = await first_in_flight(side, item=1)
        second = [asyncio.create_task(c.submit(i)) for i in (2, 3)]
        assert await first == 10
        for t in second:
            with pytest.raises(ValueError, match="bad item 2"):
                await t
        assert await c.submit(5) == 50  # the coalescer still works after a failed batch

    asyncio.run(main())


def test_a_cancelled_caller_is_left_out_and_the_others_answered() -> None:
    async def main() -> None:
        side = Echo(delay=0.03)
        c, first = await first_in_flight(side)
        gone, kept = asyncio.create_task(c.submit(1)), asyncio.create_task(c.submit(2))
        await asyncio.sleep(0.005)
        gone.cancel()
        assert await first == 0 and await kept == 20
        assert side.batches == [[0], [2]]

    asyncio.run(main())


def test_a_short_answer_is_an_error_not_a_hang() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def main() -> None:
        c = Coalescer(short)
        results = await asyncio.gather(c.submit(1), c.submit(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)

    asyncio.run(main())


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Coalescer(Echo(), max_batch=0)


def test_batches_run_outside_the_callers_context() -> None:
    import contextvars

    request = contextvars.ContextVar("request", default=None)
    seen: list = []

    async def remote(items: list[int]) -> list[int]:
        seen.append(request.get())
        return items

    async def main() -> None:
        c = Coalescer(remote)
        request.set("first caller's request")
        assert await c.submit(1) == 1

    asyncio.run(main())
    assert seen == [None]
