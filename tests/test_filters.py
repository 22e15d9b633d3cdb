"""Filters on every query kind and "less like this" (serve_app/core/filters.py, the combiner,
the HTTP API): answers obey random filters exactly (checked against pandas, not against the code
under test), are short with a note rather than padded, refuse filters no song meets by field; an
avoided song never comes back and pulls the answer away from itself."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.core.filters import RANGE_FIELDS, FilterIndex, Filters, Unmet
from serve_app.core.hybrid import Query, Recommender
from serve_app.shell.backend import LocalBackend
from serve_app.shell.cache import ResultCache
from serve_app.shell.http import create_app
from serve_app.shell.service import Service


def key(text: str) -> str:
    return "_".join(str(text).lower().split())


def passes(catalog: pd.DataFrame, f: Filters) -> np.ndarray:
    """The oracle: which songs pass ``f``, straight from the catalog's columns."""
    ok = pd.Series(True, index=catalog.index)
    for name, lo, hi in f.ranges:
        values = pd.to_numeric(catalog[name], errors="coerce")
        ok &= values.notna() & (values >= (-np.inf if lo is None else lo)) & (values <= (np.inf if hi is None else hi))
    if f.genres:
        ok &= catalog["genre"].map(lambda g: isinstance(g, str) and key(g) in {key(x) for x in f.genres})
    if f.tags:
        wanted = {key(t) for t in f.tags}
        ok &= catalog["tags"].map(lambda ts: isinstance(ts, str) and bool(wanted & {key(t) for t in ts.split(",")}))
    if f.exclude_artists:
        ok &= ~catalog["artist"].map(key).isin({key(a) for a in f.exclude_artists})
    return ok.to_numpy()


@st.composite
def filters(draw, catalog: pd.DataFrame) -> Filters:
    """Random filters: quantile ranges with open ends, real genres and tags, excluded artists."""
    ranges = []
    for name in draw(st.lists(st.sampled_from(RANGE_FIELDS), unique=True, max_size=3)):
        values = pd.to_numeric(catalog[name], errors="coerce").dropna()
        lo_q, width = draw(st.floats(0, 0.9)), draw(st.floats(0.02, 1.0))
        lo, hi = values.quantile(lo_q), values.quantile(min(1.0, lo_q + width))
        ends = draw(st.sampled_from(["both", "lo", "hi"]))
        ranges.append((name, None if ends == "hi" else float(lo), None if ends == "lo" else float(hi)))
    genres = sorted(catalog["genre"].dropna().unique())
    tags = sorted({t.strip() for ts in catalog["tags"].dropna()[:200] for t in ts.split(",")})
    artists = sorted(catalog["artist"].unique())
    return Filters(
        ranges=tuple(ranges),
        genres=tuple(draw(st.lists(st.sampled_from(genres), max_size=3, unique=True))) if genres else (),
        tags=tuple(draw(st.lists(st.sampled_from(tags), max_size=3, unique=True))),
        exclude_artists=tuple(draw(st.lists(st.sampled_from(artists), max_size=5, unique=True))),
    )


@pytest.fixture(scope="module")
def index(bundle) -> FilterIndex:
    return FilterIndex(bundle.catalog)


@pytest.fixture(scope="module")
def listener(demo_data) -> str:
    """A user id the demo bundle knows."""
    return str(pd.read_csv(demo_data / "User Listening History.csv", nrows=1)["user_id"].iloc[0])


def query_kinds(seed: int, f: Filters, listener: str) -> list[Query]:
    """One query of each kind around ``seed``, filtered by ``f``."""
    return [
        Query("songs", seeds=(seed,), k=10, filters=f),
        Query("songs", seeds=(seed, seed + 1, seed + 2), k=10, filters=f, diversity=0.5),
        Query("user", user_id="never-seen-before", k=10, filters=f),
        Query("attributes", attributes=(("tags", "rock, pop"), ("energy", 0.6)), k=10, filters=f),
        Query("segue", seeds=(seed,), to=seed + 7, k=8, filters=f),
        Query("segue", seeds=(seed,), k=6, filters=f),
        Query("user", user_id=listener, k=10, filters=f),
    ]


def test_the_oracle_and_the_index_agree_on_a_few_filters(bundle, index):
    cat = bundle.catalog
    genre = cat["genre"].dropna().iloc[0]
    for f in (
        Filters(ranges=(("tempo", 100.0, 120.0),)),
        Filters(ranges=(("year", 2000.0, None), ("energy", None, 0.5))),
        Filters(genres=(genre.upper(),)),
        Filters(tags=(cat["tags"].iloc[0].split(",")[0].strip(),)),
        Filters(exclude_artists=(cat["artist"].iloc[0],)),
    ):
        mask = index.mask(f)
        assert mask is not None and 0 < mask.sum() < len(cat)
        assert (mask == passes(cat, f)).all(), f


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_query_kind_obeys_random_filters_exactly(bundle, rec, index, listener, data):
    cat = bundle.catalog
    f = data.draw(filters(cat))
    ok = passes(cat, f)
    try:
        index.check(f)
    except Unmet:
        assert not ok.any()
        return
    seed = data.draw(st.integers(0, len(cat) - 10))
    for q in query_kinds(seed, f, listener):
        result = rec.run(q)
        found = [i.track for i in result.items]
        inner = found[1:-1] if q.kind == "segue" and q.to is not None else found[1:] if q.kind == "segue" else found
        assert ok[inner].all(), (q.kind, f, [t for t in inner if not ok[t]])
        assert len(found) == len(set(found))
        if q.kind != "segue" and len(found) < q.k:
            assert result.note and "only" in result.note


def test_a_filter_passing_one_percent_still_fills_the_list(bundle, rec, index):
    """Too few of the seed's neighbours pass: every passing song is scored (the widened pool)."""
    cat = bundle.catalog
    tempo = pd.to_numeric(cat["tempo"], errors="coerce")
    lo, hi = tempo.quantile(0.50), tempo.quantile(0.51)
    f = Filters(ranges=(("tempo", float(lo), float(hi)),))
    mask = index.mask(f)
    assert mask is not None and mask.mean() <= 0.02
    for seed in (0, 11, 250):
        result = rec.run(Query("songs", seeds=(seed,), k=10, filters=f))
        found = [i.track for i in result.items]
        passing = np.flatnonzero(mask & (np.arange(len(cat)) != seed))
        one = np.ones(1, np.float32)
        cb = rec.content.score(np.array([seed]), one, passing)
        cf = rec.collab.score(np.array([seed]), one, passing)
        related = int(((cb > 0) | (cf > 0)).sum())  # a song unlike the seed on both sides is no answer
        assert len(found) == min(10, related) and mask[found].all() and related >= 5
        assert all(i.score > 0 for i in result.items)
        assert (result.note is None) == (related >= 10)


def test_fewer_songs_than_asked_is_a_short_list_with_a_note(bundle, rec):
    artist = bundle.catalog["artist"].value_counts().index[0]
    others = tuple(a for a in bundle.catalog["artist"].unique() if a != artist)
    f = Filters(exclude_artists=others)  # only one artist's songs pass
    n_songs = int((bundle.catalog["artist"] == artist).sum())
    seed = int(np.flatnonzero(bundle.catalog["artist"] != artist)[0])
    result = rec.run(Query("songs", seeds=(seed,), k=n_songs + 5, filters=f))
    assert 0 < len(result.items) <= n_songs
    assert {bundle.catalog["artist"].iloc[i.track] for i in result.items} == {artist}
    assert result.note and f"only {len(result.items)}" in result.note


@pytest.fixture(scope="module")
def client(bundle) -> TestClient:
    return TestClient(create_app(LocalBackend(Service.from_bundle(bundle)), ResultCache(1000)))


def song(bundle, i: int) -> dict:
    row = bundle.catalog.iloc[i]
    return {"song": row["name"], "artist": row["artist"]}


def test_filters_no_song_meets_are_refused_naming_the_field(bundle, client):
    seed = song(bundle, 3)
    cases = {
        "tempo": {"tempo": [400, 500]},
        "genres": {"genres": ["no such genre at all"]},
        "tags": {"tags": ["zzz-not-a-tag"]},
        "year,energy": {"year": [None, float(bundle.catalog["year"].min())], "energy": [0.999, None]},
    }
    for field, body in cases.items():
        r = client.post("/recommend", json={**seed, "filters": body})
        assert r.status_code == 422 and f"filters.{field}" in r.json()["detail"], (field, r.text)
    for body in ({"tempo": [120, 100]}, {"tempo": [None, None]}, {"bpm": [1, 2]}, {"tempo": [1, 2, 3]}):
        r = client.post("/recommend", json={**seed, "filters": body})
        assert r.status_code == 422 and "filters" in r.json()["detail"], (body, r.text)


def test_filters_and_avoid_key_the_cache(bundle, client):
    """The same song with and without a filter or an avoided song: three different answers, each
    the same again from the cache."""
    seed = song(bundle, 5)
    plain = client.post("/recommend", json=seed).json()["recommendations"]
    first = plain[0]
    filtered_body = {**seed, "filters": {"exclude_artists": [first["artist"]]}}
    avoid_body = {**seed, "avoid": [{"song": first["song"], "artist": first["artist"]}]}
    filtered = client.post("/recommend", json=filtered_body).json()["recommendations"]
    avoided = client.post("/recommend", json=avoid_body).json()["recommendations"]
    assert first["artist"] not in {r["artist"] for r in filtered}
    assert first["track_id"] not in {r["track_id"] for r in avoided}
    assert plain != filtered and plain != avoided
    assert client.post("/recommend", json=filtered_body).json()["recommendations"] == filtered
    assert client.post("/recommend", json=avoid_body).json()["recommendations"] == avoided
    assert client.post("/recommend", json=seed).json()["recommendations"] == plain


def similarity_to(rec: Recommender, tracks: list[int], avoided: list[int]) -> float:
    """Mean blended closeness of ``tracks`` to the ``avoided`` songs: content cosine and CF
    neighbour weight, as a recommendation for them would score."""
    result = rec.run(Query("songs", seeds=tuple(avoided), k=500))
    score = {i.track: i.score for i in result.items}
    return float(np.mean([score.get(t, 0.0) for t in tracks]))


def test_avoid_pushes_similar_songs_down_and_never_returns_them(bundle, rec):
    drops = []
    for seed in range(0, 300, 15):
        plain = rec.run(Query("songs", seeds=(seed,), k=10))
        avoided = [plain.items[0].track, plain.items[3].track]
        pushed = rec.run(Query("songs", seeds=(seed,), k=10, avoid=tuple(avoided)))
        found = [i.track for i in pushed.items]
        assert not set(avoided) & set(found) and len(found) == 10
        assert all(abs(i.cb_part + i.cf_part - i.score) < 1e-6 for i in pushed.items)
        kept = [i.track for i in plain.items if i.track not in avoided]
        drops.append(similarity_to(rec, kept, avoided) - similarity_to(rec, found, avoided))
    assert np.mean(drops) > 0 and np.mean(np.array(drops) >= 0) >= 0.8, drops


def test_a_session_dislike_is_avoided_in_the_next_answer(bundle):
    backend = LocalBackend(Service.from_bundle(bundle))
    client = TestClient(create_app(backend))
    seed = song(bundle, 8)
    before = client.post("/recommend", json={**seed, "user_id": "listener-1"}).json()["recommendations"]
    disliked = before[0]["track_id"]
    asyncio.run(backend.dislike("listener-1", disliked))
    after = client.post("/recommend", json={**seed, "user_id": "listener-1"}).json()["recommendations"]
    explicit = client.post(
        "/recommend", json={**seed, "avoid": [{"song": before[0]["song"], "artist": before[0]["artist"]}]}
    ).json()["recommendations"]
    assert disliked not in {r["track_id"] for r in after}
    assert [r["track_id"] for r in after] == [r["track_id"] for r in explicit]
