"""End-user feedback: request ids that carry their weight setting, session dislikes, counters.

A ``/recommend`` response's ``request_id`` is ``<32 hex>.w<w1 %>-<w2 %>``: the weights
the listener asked for (the defaults filled in) travel with it, so feedback sent to any
ingress replica is counted under the setting that produced the list, without shared
state. Click-through per setting is then likes / impressions by the ``weights`` tag.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from typing import Protocol

from cachetools import TTLCache

SESSION_TTL_S = 30 * 60
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}\.w(\d{1,3})-(\d{1,3})$")


def new_request_id(w1: float, w2: float) -> str:
    return f"{uuid.uuid4().hex}.w{round(w1 * 100)}-{round(w2 * 100)}"


def weights_bucket(w1: float, w2: float) -> str:
    """The counter tag of a weight setting, to one decimal: ``"0.3/0.7"``."""
    return f"{w1:.1f}/{w2:.1f}"


def request_bucket(request_id: str) -> str:
    """The weight setting a request id was issued under, or ``"unknown"``."""
    m = _REQUEST_ID.match(request_id)
    if not m or int(m[1]) > 100 or int(m[2]) > 100:
        return "unknown"
    return weights_bucket(int(m[1]) / 100, int(m[2]) / 100)


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
        self.values: Counter = Counter()
        self.observed: dict[tuple, list[float]] = {}
        self.gauges: dict[tuple, float] = {}

    def inc(self, name: str, tags: dict[str, str], value: float = 1.0) -> None:
        self.values[(name, tuple(sorted(tags.items())))] += value

    def observe(self, name: str, tags: dict[str, str], value: float) -> None:
        self.observed.setdefault((name, tuple(sorted(tags.items()))), []).append(value)

    def set(self, name: str, tags: dict[str, str], value: float) -> None:
        self.gauges[(name, tuple(sorted(tags.items())))] = value

    def get(self, name: str, **tags: str) -> float:
        return self.values[(name, tuple(sorted(tags.items())))]


class Sessions:
    """The songs (track ids) each user disliked, kept until ``ttl_s`` seconds after their
    latest dislike (the session): recommendations for that user leave them out.
    Thread-safe, bounded to ``max_users``."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_users: int = 100_000) -> None:
        self._users: TTLCache = TTLCache(maxsize=max_users, ttl=ttl_s)
        self._lock = threading.Lock()

    def dislike(self, user_id: str, track_id: str) -> None:
        with self._lock:
            self._users[user_id] = self._users.get(user_id, frozenset()) | {track_id}

    def disliked(self, user_id: str) -> frozenset[str]:
        with self._lock:
            return self._users.get(user_id, frozenset())
