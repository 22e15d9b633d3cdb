"""Segues and continuations (serve_app/core/segue.py) in process and through the HTTP API: the
rules every path keeps, partial answers with a reason, and the API's errors."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_app.core.hybrid import Query, Recommender, Result
from serve_app.core.segue import MIN_STEP, PathFinder, progress_share
from serve_app.shell.backend import LocalBackend
from serve_app.shell.http import create_app
from serve_app.shell.service import Service


@pytest.fixture(scope="module")
def paths(rec: Recommender) -> PathFinder:
    assert rec.combiner.paths is not None
    return rec.combiner.paths


@pytest.fixture(scope="module")
def pairs(bundle) -> list[tuple[int, int]]:
    rng = np.random.default_rng(7)
    return [tuple(int(x) for x in rng.choice(len(bundle.catalog), 2, replace=False)) for _ in range(40)]


@pytest.fixture(scope="module")
def client(bundle) -> TestClient:
    return TestClient(create_app(LocalBackend(Service.from_bundle(bundle))))


def tracks(result: Result) -> list[int]:
    return [item.track for item in result.items]


def longest_artist_run(artists: np.ndarray) -> int:
    runs, best = 1, 1
    for a, b in zip(artists[:-1], artists[1:]):
        runs = runs + 1 if a == b else 1
        best = max(best, runs)
    return best


def ref(bundle, track: int) -> dict:
    row = bundle.catalog.iloc[track]
    return {"song": row["name"], "artist": row["artist"]}


@pytest.mark.parametrize("length", [2, 3, 4, 12, 25])
def test_a_segue_starts_and_ends_where_asked_without_repeats_or_long_artist_runs(rec, pairs, length):
    for a, b in pairs[:15]:
        result = rec.run(Query("segue", seeds=(a,), to=b, k=length))
        path = tracks(result)
        assert result.kind == "segue" and len(path) == length
        assert path[0] == a and path[-1] == b and len(set(path)) == length
        assert longest_artist_run(rec.artists[path]) <= 2
        assert result.items[0].score == 0.0 and all(0.0 <= i.score <= 1.0 for i in result.items)
        assert all(abs(i.cb_part + i.cf_part - i.score) < 1e-9 for i in result.items[1:])


def test_reported_steps_are_the_steps_measured_between_the_songs(rec, paths, pairs):
    for a, b in pairs[:10]:
        result = rec.run(Query("segue", seeds=(a,), to=b, k=12, w1=0.5, w2=0.5))
        sim, cb, cf = paths.steps(np.array(tracks(result)), 0.5, 0.5)
        assert np.allclose([i.score for i in result.items[1:]], sim)
        assert np.allclose([i.cb for i in result.items[1:]], cb)
        assert np.allclose([i.cf for i in result.items[1:]], cf)
        closeness = paths.closeness(b, 0.5, 0.5)
        assert np.allclose([i.toward for i in result.items], closeness[tracks(result)])
        assert closeness[b] == pytest.approx(1.0) and closeness.max() == pytest.approx(1.0)


def test_mending_lifts_the_weakest_step_and_keeps_every_rule(paths, pairs):
    """The pass after the search only swaps songs around the weakest step when that lifts it:
    against the same search without it, no path's weakest step is lower, some are higher, and
    the mended paths still keep progress, filters, artist runs and no repeats."""
    unmended = dataclasses.replace(paths, config=dataclasses.replace(paths.config, mend_fanout=0))
    allowed = np.ones(paths.n, bool)
    allowed[::7] = False  # a filter: every seventh song out
    lifted = 0
    for a, b in pairs:
        allowed_ab = allowed.copy()
        allowed_ab[[a, b]] = True
        mended, plain = paths.find(a, 12, 0.3, 0.7, b, allowed_ab), unmended.find(a, 12, 0.3, 0.7, b, allowed_ab)
        assert mended.similarity.min() >= plain.similarity.min() - 1e-12
        lifted += mended.similarity.min() > plain.similarity.min() + 1e-9
        path = mended.tracks
        assert len(set(path.tolist())) == 12 and allowed_ab[path].all()
        assert longest_artist_run(paths.artists[path]) <= 2
        if plain.complete:
            assert mended.complete and (np.diff(mended.toward) > 0).all()
    assert lifted >= 1


def test_closeness_blends_content_and_listener_space_where_the_song_has_a_place(bundle, paths):
    """Content cosine for a song without listeners, both spaces weighted w1:w2 for one with."""
    content = lambda t: paths.vectors @ paths.vectors[t].toarray().ravel()  # noqa: E731
    cold = int(np.flatnonzero(bundle.catalog["listeners"].to_numpy() == 0)[0])
    assert np.allclose(paths.closeness(cold, 0.3, 0.7), content(cold))
    assert paths.factors is not None
    warm = 0
    listeners = paths.factors @ paths.factors[warm]
    assert np.allclose(paths.closeness(warm, 0.3, 0.7), 0.3 * content(warm) + 0.7 * listeners, atol=1e-6)


def test_segues_move_toward_the_end_in_close_steps(rec, paths, pairs):
    """Over many pairs: almost every step gets closer to the last song, and the average step is
    about as close as a song and its typical neighbour."""
    progress, mean_step, complete = [], [], []
    for a, b in pairs:
        result = rec.run(Query("segue", seeds=(a,), to=b, k=12))
        progress.append(progress_share(np.array([i.toward for i in result.items])))
        mean_step.append(np.mean([i.score for i in result.items[1:]]))
        complete.append(result.complete)
    assert np.mean(progress) >= 0.9
    assert np.mean(mean_step) >= 2 * MIN_STEP
    assert np.mean(complete) >= 0.7


def test_a_segue_that_turns_back_names_the_step(rec, pairs):
    named = 0
    for a, b in pairs:
        result = rec.run(Query("segue", seeds=(a,), to=b, k=12))
        found = re.search(r"step (\d+) turns back", result.note or "")
        if found:
            step = int(found.group(1))  # the step into song ``step`` (0-based) gets no closer
            toward = [i.toward for i in result.items]
            assert not result.complete and toward[step] <= toward[step - 1]
            assert all(x < y for x, y in zip(toward[: step - 1], toward[1:step]))  # the first that does
            named += 1
    assert named >= 1


def test_an_artist_cap_of_one_never_repeats_an_artist_back_to_back(rec, pairs):
    for a, b in pairs[:10]:
        path = tracks(rec.run(Query("segue", seeds=(a,), to=b, k=15, max_run=1)))
        assert longest_artist_run(rec.artists[path]) == 1


def test_a_continuation_flows_from_the_first_song(rec, pairs):
    for a, _ in pairs[:10]:
        result = rec.run(Query("segue", seeds=(a,), k=12))
        path = tracks(result)
        assert result.kind == "continuation" and path[0] == a and len(set(path)) == 12
        assert all(i.toward is None for i in result.items)
        assert np.mean([i.score for i in result.items[1:]]) >= 2 * MIN_STEP
        assert longest_artist_run(rec.artists[path]) <= 2


def test_no_path_within_the_rules_is_a_partial_answer_with_a_reason(rec, bundle, pairs):
    """Only three songs may lie between the ends: the path holds what can be chained, says so."""
    a, b = pairs[0]
    allowed = np.zeros(len(bundle.catalog), bool)
    allowed[[t for t in range(10) if t not in (a, b)][:3]] = True
    path = rec.combiner.paths.find(a, 12, 0.3, 0.7, b, allowed)
    assert not path.complete and "only" in path.reason
    assert path.tracks[0] == a and path.tracks[-1] == b and len(path.tracks) < 12
    assert allowed[path.tracks[1:-1]].all() and len(set(path.tracks.tolist())) == len(path.tracks)


def test_the_api_answers_a_segue(client, bundle, pairs):
    a, b = pairs[1]
    r = client.post("/segue", json={"from": ref(bundle, a), "to": ref(bundle, b), "length": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    path = body["path"]
    assert len(path) == 8 and path[0]["similarity"] is None and all(p["similarity"] is not None for p in path[1:])
    assert (path[0]["song"], path[-1]["song"]) == (ref(bundle, a)["song"], ref(bundle, b)["song"])
    assert body["summary"]["min_similarity"] == min(p["similarity"] for p in path[1:])
    assert body["query"]["kind"] == "segue" and len(body["query"]["seeds"]) == 2 and body["reason"]
    cont = client.post("/segue", json={"from": ref(bundle, a), "length": 5}).json()
    assert cont["query"]["kind"] == "continuation" and len(cont["path"]) == 5 and cont["summary"]["progress"] is None


def test_the_api_refuses_bad_segues_with_reasons(client, bundle, pairs):
    a, b = pairs[2]
    unknown = client.post("/segue", json={"from": {"song": "zzqx no such song"}, "to": ref(bundle, b)})
    assert unknown.status_code == 404 and "suggestions" in unknown.json() and unknown.json()["field"] == "from"
    unknown_to = client.post("/segue", json={"from": ref(bundle, a), "to": {"song": "zzqx no such song"}})
    assert unknown_to.status_code == 404 and unknown_to.json()["field"] == "to"
    same = client.post("/segue", json={"from": ref(bundle, a), "to": ref(bundle, a)})
    assert same.status_code == 422 and "same song" in same.json()["detail"]
    for length in (1, 51, "ten"):
        bad = client.post("/segue", json={"from": ref(bundle, a), "length": length})
        assert bad.status_code == 422 and "length" in bad.json()["detail"]
    nothing = client.post(
        "/segue", json={"from": ref(bundle, a), "to": ref(bundle, b), "filters": {"tempo": [500, 600]}}
    )
    assert nothing.status_code == 422 and "filters.tempo" in nothing.json()["detail"]
    assert "/segue" in client.get("/openapi.json").json()["paths"]


def test_listener_coordinates_place_co_listened_songs_together(bundle, paths):
    """``jobs.indexing.cf_factors``: unit rows for songs someone played, zero rows for the
    others, and a song's CF neighbours closer to it in that space than songs at random."""
    factors = paths.factors
    assert factors is not None and factors.dtype == np.float32 and factors.shape[0] == len(bundle.catalog)
    norms = np.linalg.norm(factors, axis=1)
    played = bundle.catalog["listeners"].to_numpy() > 0
    assert np.allclose(norms[played], 1.0, atol=1e-5) and np.all(norms[~played] == 0)
    rng = np.random.default_rng(0)
    nn = bundle.cf_nn
    seeds = rng.choice(np.flatnonzero(played), 100, replace=False)
    near = [float(factors[s] @ factors[nn.indices[nn.indptr[s]]]) for s in seeds]
    far = [float(factors[s] @ factors[t]) for s, t in zip(seeds, rng.permutation(seeds))]
    assert np.mean(near) > np.mean(far) + 0.3


def test_a_bundle_without_listener_coordinates_still_answers_segues(bundle):
    """Bundles written before ``item_factors.npy``: content alone measures closeness."""
    import dataclasses

    old = Recommender.from_bundle(dataclasses.replace(bundle, cf_factors=None))
    result = old.run(Query("segue", seeds=(3,), to=40, k=10))
    assert [i.track for i in result.items][::9] == [3, 40]
    assert np.allclose(
        old.combiner.paths.closeness(40, 0.3, 0.7), bundle.content @ bundle.content[40].toarray().ravel()
    )
