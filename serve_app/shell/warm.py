"""Fill the results cache with the default answers for the most-played songs.

Requests follow play counts: in the 30K-song benchmark catalog the 10,000 most-played
songs are 88 % of the plays. Computing their answers to the minimal request
(``{"song", "artist"}``: k 10, default weights, no diversity) ahead, a batch per round
trip, means the head of the traffic never waits for the scorers. A warm belongs to one
bundle version and one pair of default weights: its entries are keyed by both, and the
owner cancels it (and clears the cache) when either changes, so it can never make an
answer served stale.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from serve_app.core.hybrid import Query, Result
from serve_app.shell.cache import ResultCache
from serve_app.shell.reload import VersionGone
from serve_app.shell.service import Front

log = logging.getLogger("segue.warm")
RunMany = Callable[[Sequence[Query], str], Awaitable[Sequence["Result | Exception"]]]


@dataclass
class WarmStatus:
    """How far the current warm got (reported in ``/readyz``)."""

    state: str = "idle"  # idle | running | done | failed
    entries: int = 0
    target: int = 0
    seconds: float = 0.0
    detail: str | None = None
    started: float = field(default=0.0, repr=False)

    def report(self) -> dict:
        return {
            "state": self.state,
            "entries": self.entries,
            "target": self.target,
            "seconds": round(self.seconds, 1),
            "detail": self.detail,
        }


async def warm(
    cache: ResultCache,
    front: Front,
    weights: tuple[float, float],
    run_many: RunMany,
    count: int,
    status: WarmStatus,
    batch: int = 32,
    not_ready_s: float = 60.0,
    retry_s: float = 1.0,
    duty: float = 0.5,
) -> None:
    """Put the answers for ``front``'s ``count`` most-played songs (at most the cache's size)
    into ``cache``, most played first, ``batch`` queries per ``run_many`` call. Answers the
    graph cannot give yet (a part still loading this version: :class:`VersionGone`) are
    retried every ``retry_s`` for up to ``not_ready_s``; any other failure stops the warm,
    never the caller. After each batch the warm pauses so that it keeps the graph busy for
    at most ``duty`` of the time: live requests (and replicas restarting beside it) come
    first."""
    tracks = front.most_played(min(count, cache.size))
    status.state, status.entries, status.target, status.detail = "running", 0, len(tracks), None
    status.started, status.seconds = time.monotonic(), 0.0
    waited = 0.0
    try:
        start = 0
        while start < len(tracks):
            queries = [front.song_query(int(t), weights) for t in tracks[start : start + batch]]
            asked = time.monotonic()
            results = await run_many(queries, front.version)
            took = time.monotonic() - asked
            gone = [r for r in results if isinstance(r, VersionGone)]
            if gone and len(gone) == len(results):
                if waited >= not_ready_s:
                    raise gone[0]
                waited += retry_s
                await asyncio.sleep(retry_s)
                continue
            for q, r in zip(queries, results):
                if isinstance(r, Result) and not r.degraded:
                    cache.put((q, front.version), r)
                    status.entries += 1
            start += batch
            status.seconds = time.monotonic() - status.started
            await asyncio.sleep(took * (1.0 - duty) / duty)
        status.state = "done"
        log.info("cache warmed: %d answers for bundle %s in %.1f s", status.entries, front.version, status.seconds)
    except asyncio.CancelledError:
        status.state = "idle"
        raise
    except Exception as exc:  # the graph failed under us: serve without the warm entries
        status.state, status.detail = "failed", f"{type(exc).__name__}: {exc}"
        log.warning("cache warm stopped after %d answers: %s", status.entries, status.detail)
    status.seconds = time.monotonic() - status.started


def settle_heap() -> None:
    """Take every live object (the bundle, the warmed cache) out of the garbage collector's
    scans, once a warm is done. With the ~300K long-lived objects of a 30K-song bundle and
    10,000 warmed answers tracked, each full collection stalled the process for ~225 ms (a
    latency spike for every request in flight); frozen, the next took ~50 ms. Unfreezes
    and collects first, so that garbage an earlier freeze kept (a previous bundle) goes."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class WarmCache:
    """The ingress's results cache with its warm-up: one bundle version's and one pair of
    default weights' answers. :meth:`refresh` on every bundle switch or weight change drops them
    all and starts warming the new head; :meth:`fill` warms and waits (the standalone server)."""

    def __init__(self, cache_size: int = 0, warm_size: int = 0) -> None:
        self.cache = ResultCache(cache_size)
        self.warm_size = warm_size
        self.status = WarmStatus()
        self._task: asyncio.Task | None = None

    def configure(self, cache_size: int, warm_size: int) -> bool:
        """New sizes; True when they changed (the caller refreshes then)."""
        changed = (cache_size, warm_size) != (self.cache.size, self.warm_size)
        self.cache.resize(cache_size)
        self.warm_size = warm_size
        return changed

    def refresh(self, front: Front | None, weights: tuple[float, float], run_many: RunMany) -> None:
        """Drop every answer; warm ``front``'s head in the background (none while no bundle is loaded)."""
        self.cache.clear()
        if self._task is not None:
            self._task.cancel()
        if self.warm_size and front is not None:
            self._task = asyncio.get_running_loop().create_task(self.fill(front, weights, run_many))

    async def fill(self, front: Front, weights: tuple[float, float], run_many: RunMany) -> None:
        """Warm ``front``'s ``warm_size`` most-played songs; then take the heap out of the collector's scans."""
        await warm(self.cache, front, weights, run_many, self.warm_size, self.status)
        if self.status.state == "done":
            settle_heap()

    def report(self) -> dict:
        """The cache's counters and the warm's progress, for ``/readyz``."""
        return {**self.cache.stats(), "warm": self.status.report()}
