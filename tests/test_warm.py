"""The cache warm: the head songs' default answers are computed ahead, keyed exactly as a
request's, bounded by the cache, patient with a graph still loading, quiet on failure."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_app.artifacts import bundle
from serve_app.shell.api import RecommendRequest
from serve_app.shell.backend import LocalBackend
from serve_app.shell.cache import ResultCache
from serve_app.shell.http import create_app
from serve_app.shell.reload import VersionGone
from serve_app.shell.service import Service
from serve_app.shell.warm import WarmStatus, warm


@pytest.fixture(scope="module")
def service(demo_bundle):
    s = Service.from_bundle(bundle.load(str(demo_bundle)))
    s.rec.set_default_weights(0.3, 0.7)
    return s


def run_warm(service, cache, count, run_many=None, **kw) -> WarmStatus:
    status = WarmStatus()
    asyncio.run(warm(cache, service.front, service.default_weights, run_many or service.run_many, count, status, **kw))
    return status


def test_most_played_is_the_head_of_the_plays(service):
    plays = service.front.bundle.catalog["plays"].to_numpy()
    head = service.front.most_played(20)
    assert len(head) == 20 and head.dtype == np.int64
    assert (np.diff(plays[head]) <= 0).all() and plays[head[-1]] >= np.sort(plays)[-20]


def test_song_query_is_the_minimal_requests_query(service):
    for track in service.front.most_played(5):
        name, artist = service.front._name[track], service.front._artist[track]
        asked = service.front.ask(RecommendRequest(song=name, artist=artist), (0.3, 0.7))
        assert asked.query == service.front.song_query(int(track), (0.3, 0.7))
        asked_k = service.front.ask(RecommendRequest(song=name, artist=artist, k=5), (0.3, 0.7))
        assert asked_k.query != service.front.song_query(int(track), (0.3, 0.7))


def test_warm_answers_the_head_and_requests_hit_it(service):
    cache = ResultCache(100)
    status = run_warm(service, cache, 40, batch=16)
    assert status.report()["state"] == "done" and status.entries == status.target == 40
    assert cache.stats() == {"entries": 40, "hits": 0, "misses": 0}
    warmed, cold = TestClient(create_app(LocalBackend(service), cache)), TestClient(create_app(LocalBackend(service)))
    for track in service.front.most_played(40)[::7]:
        body = {"song": service.front._name[track], "artist": service.front._artist[track]}
        got = warmed.post("/recommend", json=body).json()
        assert got["recommendations"] == cold.post("/recommend", json=body).json()["recommendations"]
    assert cache.stats()["hits"] == 6 and cache.stats()["misses"] == 0
    # other weights, other k: not what was warmed
    warmed.post("/recommend", json={**body, "w1": 0.5, "w2": 0.5})
    warmed.post("/recommend", json={**body, "k": 3})
    assert cache.stats()["misses"] == 2


def test_warm_is_bounded_by_the_cache(service):
    cache = ResultCache(12)
    status = run_warm(service, cache, 500, batch=5)
    assert status.target == 12 and cache.stats()["entries"] == 12
    assert run_warm(service, ResultCache(0), 500).target == 0


def test_warm_waits_for_a_graph_still_loading_the_version(service):
    calls = []

    async def loading_then_ready(queries, version):
        calls.append(len(queries))
        if len(calls) <= 3:
            return [VersionGone("loading")] * len(queries)
        return await service.run_many(queries, version)

    cache = ResultCache(50)
    status = run_warm(service, cache, 20, loading_then_ready, batch=10, retry_s=0.01)
    assert status.state == "done" and status.entries == 20 and calls == [10, 10, 10, 10, 10]


def test_warm_gives_up_on_a_version_that_never_comes(service):
    async def never(queries, version):
        return [VersionGone("gone")] * len(queries)

    status = run_warm(service, ResultCache(50), 20, never, batch=10, retry_s=0.01, not_ready_s=0.05)
    assert status.state == "failed" and "gone" in status.detail and status.entries == 0


def test_a_failing_graph_stops_the_warm_not_the_caller(service):
    calls = []

    async def breaks(queries, version):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("replica died")
        return await service.run_many(queries, version)

    cache = ResultCache(50)
    status = run_warm(service, cache, 30, breaks, batch=10)
    assert status.state == "failed" and "replica died" in status.detail and status.entries == 10
    assert cache.stats()["entries"] == 10


def test_a_cancelled_warm_keeps_what_it_stored(service):
    async def scenario():
        started = asyncio.Event()

        async def slow(queries, version):
            started.set()
            await asyncio.sleep(10)

        status = WarmStatus()
        task = asyncio.create_task(warm(ResultCache(50), service.front, (0.3, 0.7), slow, 20, status))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return status

    assert asyncio.run(scenario()).state == "idle"


@pytest.mark.parametrize("duty, pause", [(0.5, 0.2), (0.25, 0.6), (1.0, 0.0)])
def test_the_warm_pauses_to_leave_the_graph_to_live_requests(service, monkeypatch, duty, pause):
    """Each batch that kept the graph busy for 0.2 s is followed by a pause that makes the
    warm's share of the time ``duty`` (a fake clock: nothing here waits)."""
    from serve_app.shell import warm as warm_module

    clock, pauses = [100.0], []
    monkeypatch.setattr(warm_module.time, "monotonic", lambda: clock[0])

    async def busy(queries, version):
        clock[0] += 0.2
        return await service.run_many(queries, version)

    async def no_wait(seconds):
        pauses.append(round(seconds, 6))

    monkeypatch.setattr(warm_module.asyncio, "sleep", no_wait)
    status = run_warm(service, ResultCache(100), 40, busy, batch=10, duty=duty)
    assert status.state == "done" and status.entries == 40
    assert pauses == [pause] * 4


def test_settle_heap_takes_live_objects_out_of_the_collectors_scans_and_frees_old_cycles() -> None:
    import gc
    import weakref

    from serve_app.shell.warm import settle_heap

    class Node:
        pass

    cycle = Node()
    cycle.self = cycle
    gone = weakref.ref(cycle)
    gc.freeze()  # an earlier freeze kept the cycle out of the scans
    del cycle
    kept = [{"answer": i} for i in range(1000)]
    try:
        settle_heap()
        assert gone() is None  # unfrozen and collected: no leak from the earlier freeze
        assert gc.get_freeze_count() > len(kept)
        assert not any(gc.is_tracked(o) and o in gc.get_objects(generation=2) for o in kept[:3])
    finally:
        gc.unfreeze()
