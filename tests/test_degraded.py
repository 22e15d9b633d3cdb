"""Answers when a part of the graph does not answer: the core's fallbacks
(``serve_app.core.hybrid.Unavailable``), the circuit breaker, and what the API does with them
(served with the reason, never cached; the most played songs past the request's budget).

The live graph with a hung side is in tests/test_serve.py; the SIGSTOP scenarios under load
are in ``make reliability``.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_app.core.hybrid import Query, Recommender, Result, Unavailable, run_steps
from serve_app.core.sides import Diversify, run_call
from serve_app.shell.backend import LocalBackend
from serve_app.shell.breaker import Breaker
from serve_app.shell.cache import ResultCache
from serve_app.shell.http import create_app
from serve_app.shell.service import Overdue, Service

K = 10


def run_without(rec: Recommender, query: Query, down: set[str]) -> Result:
    """``query`` answered with the sides in ``down`` answering :class:`Unavailable`."""

    def execute(calls):
        return [Unavailable(c.side, "test") if c.side in down else run_call(c, rec.content, rec.collab) for c in calls]

    return run_steps(rec.combiner.steps(query), execute)


def warm_seed(rec: Recommender) -> int:
    return int(np.argmax(rec.combiner.listeners))  # the most-listened song: both sides have a say


def tracks(result: Result) -> list[int]:
    return [i.track for i in result.items]


@pytest.mark.parametrize(
    "down, alone, fallback, part",
    [
        ("collab", (1.0, 0.0), "collab_unavailable", "collaborative part unavailable"),
        ("content", (0.0, 1.0), "content_unavailable", "content part unavailable"),
    ],
)
def test_without_one_side_the_answer_is_the_other_sides_ranking(rec, down, alone, fallback, part) -> None:
    seed = warm_seed(rec)
    degraded = run_without(rec, Query("songs", seeds=(seed,), k=K), {down})
    other_only = rec.run(Query("songs", seeds=(seed,), k=K, w1=alone[0], w2=alone[1]))
    assert tracks(degraded) == tracks(other_only)
    assert degraded.weights.fallback == fallback and degraded.degraded
    assert (degraded.weights.w1, degraded.weights.w2) == alone
    assert part in degraded.weights.reason
    assert all((i.cf if down == "collab" else i.cb) == 0.0 for i in degraded.items)


def test_without_both_the_answer_is_popularity_without_the_seed(rec) -> None:
    seed = warm_seed(rec)
    degraded = run_without(rec, Query("songs", seeds=(seed,), k=K), {"content", "collab"})
    assert len(degraded.items) == K and seed not in tracks(degraded)
    assert degraded.weights.fallback == "parts_unavailable" and degraded.degraded
    popular = [t for t in tracks(rec.popular(K + 1)) if t != seed][:K]
    assert tracks(degraded) == popular


def test_a_missing_side_weighted_zero_is_not_missed(rec) -> None:
    seed = warm_seed(rec)
    asked = Query("songs", seeds=(seed,), k=K, w1=1.0, w2=0.0)
    result = run_without(rec, asked, {"collab"})
    assert not result.degraded and tracks(result) == tracks(rec.run(asked))


def test_diversity_is_skipped_not_failed_without_content(rec) -> None:
    seed = warm_seed(rec)
    asked = Query("songs", seeds=(seed,), k=K, diversity=0.5)

    def execute(calls):  # scoring answers, the diversity step does not
        return [
            Unavailable("content") if isinstance(c, Diversify) else run_call(c, rec.content, rec.collab) for c in calls
        ]

    result = run_steps(rec.combiner.steps(asked), execute)
    plain = rec.run(Query("songs", seeds=(seed,), k=K))
    assert tracks(result) == tracks(plain)  # the blended ranking, undiversified
    assert result.degraded and "diversity skipped" in result.weights.reason


def test_a_new_song_without_content_gets_popularity(rec, bundle) -> None:
    song = bundle.catalog.iloc[0][["name", "artist", "tags", "genre"]].to_dict()
    result = run_without(rec, Query("attributes", attributes=tuple(song.items()), k=K), {"content"})
    assert len(result.items) == K and result.weights.fallback == "parts_unavailable"


# ---------------------------------------------------------------------------- breaker
class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_failures_in_a_row_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    b = Breaker(failures=2, cooldown_s=1.0, clock=clock)
    assert b.allow()
    b.failure()
    assert b.allow() and b.state == "closed"  # one failure is not enough
    b.failure()
    assert b.state == "open" and not b.allow()  # refused at once: nobody waits for the side
    clock.t = 0.5
    assert not b.allow()
    clock.t = 1.0
    assert b.allow()  # the probe
    assert b.state == "probing" and not b.allow()  # one probe at a time
    b.failure()  # still down: open again, for a new cooldown
    assert b.state == "open" and not b.allow()
    clock.t = 2.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.opened == 1


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    b = Breaker(failures=1, cooldown_s=1.0, clock=clock)
    b.failure()
    clock.t = 1.0
    assert b.allow() and not b.allow()
    b.abandon()  # the probe's caller was cancelled: no verdict
    assert b.allow()  # without abandon() every later call would be refused for good
    b.success()
    assert b.state == "closed"


def test_breaker_success_resets_the_count() -> None:
    b = Breaker(failures=2, clock=Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"


# ---------------------------------------------------------------------------- API
def test_degraded_answers_are_served_with_the_reason_and_not_cached(rec, bundle) -> None:
    service = Service.from_bundle(bundle)
    cache = ResultCache(100)
    down = {"collab"}
    backend = LocalBackend(service)

    async def run(query, version):
        return run_without(service.rec, query, down)

    backend.run = run
    client = TestClient(create_app(backend, cache))
    seed = warm_seed(rec)
    body = {"song": bundle.catalog["name"][seed], "artist": bundle.catalog["artist"][seed]}
    first = client.post("/recommend", json=body).json()
    assert first["weights_used"]["fallback"] == "collab_unavailable"
    assert "collaborative part unavailable" in first["weights_used"]["reason"]
    assert cache.stats()["entries"] == 0
    down.clear()  # the side is back: the next answer is the full blend, and that one is kept
    second = client.post("/recommend", json=body).json()
    assert second["weights_used"]["fallback"] is None and cache.stats()["entries"] == 1


def test_no_answer_within_the_budget_gets_the_most_played_songs_saying_why(bundle) -> None:
    service = Service.from_bundle(bundle)
    backend = LocalBackend(service)

    async def overdue(query, version):
        raise Overdue("no answer within the request's budget of 300 ms")

    backend.run = overdue
    cache = ResultCache(10)
    seed = int(np.argmax(bundle.catalog["listeners"].to_numpy()))
    resp = TestClient(create_app(backend, cache)).post(
        "/recommend", json={"song": bundle.catalog["name"][seed], "artist": bundle.catalog["artist"][seed], "k": 5}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["weights_used"]["fallback"] == "parts_unavailable"
    assert body["weights_used"]["reason"] == "no answer within the request's budget of 300 ms: most played songs"
    popular = [t for t in tracks(service.rec.popular(6)) if t != seed][:5]
    assert [r["track_id"] for r in body["recommendations"]] == [bundle.catalog["track_id"][t] for t in popular]
    assert cache.stats()["entries"] == 0


def test_cache_keep_decides_what_is_stored() -> None:
    async def main() -> None:
        cache = ResultCache(10)

        async def compute():
            return "value"

        assert await cache.get("a", compute, keep=lambda v: False) == "value"
        assert cache.stats()["entries"] == 0
        assert await cache.get("a", compute) == "value"
        assert cache.stats()["entries"] == 1

    asyncio.run(main())
