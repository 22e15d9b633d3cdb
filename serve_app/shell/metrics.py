"""Metrics: where counters, latency histograms and gauges go (Ray's metrics endpoint under Serve,
memory in one process), and the middleware that counts every HTTP request."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

log = logging.getLogger("segue.http")
CLIENT_GONE = 499  # the code a request is counted under when its client left before the answer (nginx's)


class Counts(Protocol):
    """Where the metrics go (Ray's metrics in Serve, memory in one process): counters
    (``inc``), latency histograms in milliseconds (``observe``) and gauges (``set``)."""

    def inc(self, name: str, tags: dict[str, str], value: float = 1.0) -> None: ...

    def observe(self, name: str, tags: dict[str, str], value: float) -> None: ...

    def set(self, name: str, tags: dict[str, str], value: float) -> None: ...


class MemoryCounts:
    """Metrics in dicts, keyed by ``(name, sorted tags)``: counter totals (and observation
    counts), observed values, gauge values."""

    def __init__(self) -> None:
        self.values: dict[tuple, float] = {}
        self.observed: dict[tuple, list[float]] = {}
        self.gauges: dict[tuple, float] = {}

    def inc(self, name: str, tags: dict[str, str], value: float = 1.0) -> None:
        key = (name, tuple(sorted(tags.items())))
        self.values[key] = self.values.get(key, 0.0) + value

    def observe(self, name: str, tags: dict[str, str], value: float) -> None:
        self.observed.setdefault((name, tuple(sorted(tags.items()))), []).append(value)

    def set(self, name: str, tags: dict[str, str], value: float) -> None:
        self.gauges[(name, tuple(sorted(tags.items())))] = value

    def get(self, name: str, **tags: str) -> float:
        return self.values.get((name, tuple(sorted(tags.items()))), 0.0)


LATENCY_BOUNDS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class RayCounts:
    """Metrics at Ray's metrics endpoint (Prometheus), one per name, created on first use
    with the tag keys it is first given."""

    def __init__(self) -> None:
        from ray.util import metrics  # here: the tests and the standalone server never load Ray

        self._kinds = metrics
        self._metrics: dict[str, Any] = {}

    def _get(self, kind: type, name: str, tags: dict[str, str], **kw: Any) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = kind(name, description=f"Segue {name}", tag_keys=tuple(sorted(tags)), **kw)
        return metric

    def inc(self, name: str, tags: dict[str, str], value: float = 1.0) -> None:
        self._get(self._kinds.Counter, name, tags).inc(value, tags)

    def observe(self, name: str, tags: dict[str, str], value: float) -> None:
        self._get(self._kinds.Histogram, name, tags, boundaries=LATENCY_BOUNDS_MS).observe(value, tags)

    def set(self, name: str, tags: dict[str, str], value: float) -> None:
        self._get(self._kinds.Gauge, name, tags).set(value, tags)


class RequestMetrics:
    """ASGI middleware: every request counted by route, method and status code
    (``segue_requests``) and its latency observed in ms (``segue_request_ms``); paths that
    are not routes count as ``other``, so the tags stay few. Answers >= 400 are logged one
    line each (under Serve: JSON with the request id). A request cancelled before its answer
    (Serve cancels it when the client disconnects) counts as 499, not as a server error."""

    def __init__(self, app, counts: Counts, routes: frozenset[str]) -> None:
        self.app = app
        self.counts = counts
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:  # the client (or the proxy for it) went away: no answer was sent
            status = CLIENT_GONE if status == 500 else status
            raise
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            ms = (time.perf_counter() - started) * 1000
            self.counts.inc("segue_requests", {"route": route, "method": scope["method"], "code": str(status)})
            self.counts.observe("segue_request_ms", {"route": route}, ms)
            if status >= 400:  # access logs are off for speed; the refused and failed ones are logged
                log.log(
                    logging.ERROR if status >= 500 else logging.INFO,
                    "%s %s -> %d in %.1f ms",
                    scope["method"],
                    route,
                    status,
                    ms,
                )
